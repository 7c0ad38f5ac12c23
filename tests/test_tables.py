"""Tests for sarssl.downstream.tables: validation, collection, summaries, rendering, and the
`sarssl tables` command on run folders with predictions (intervals, paired differences,
label efficiency, regional claim, the controls in every table)."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_finetune_run
from sarssl.cli import main
from sarssl.downstream import tables
from sarssl.errors import InputError

FRACTIONS = (0.01, 0.1, 1.0)
BASE = {"scratch": 0.40, "mae": 0.56, "dino": 0.49}


def true_miou(init: str, protocol: str, fraction: float, seed: int, area: str) -> float:
    """The synthetic ground truth: +0.08 mIoU per decade of labels, seed offset ±0.01."""
    b = BASE[init] - (0.07 if protocol == "linear" else 0.0) - (0.06 if area == "chimoio" else 0.0)
    return b + 0.08 * math.log10(fraction) + (0.01 if seed else -0.01)


def make_rows(seeds=(0, 1)) -> list[dict]:
    rows = []
    for task, init, prot, frac, seed, fa in itertools.product(
        ("landcover", "treecover"),
        BASE,
        ("finetune", "linear"),
        FRACTIONS,
        seeds,
        ("rome", "chimoio"),
    ):
        m = true_miou(init, prot, frac, seed, fa)
        mets = (
            {"miou": m, "overall_accuracy": m + 0.2, "iou_water": m + 0.1}
            if task == "landcover"
            else {"rmse": 30 - 30 * m, "mae": 20 - 20 * m, "r2": m}
        )
        for k, v in mets.items():
            rows.append(
                dict(
                    task=task,
                    init=init,
                    protocol=prot,
                    fraction=frac,
                    seed=seed,
                    pretrain_area="rome",
                    finetune_area=fa,
                    n_train_chips=int(round(400 * frac)),
                    metric=k,
                    value=v,
                    epochs=7,
                    wall_s=2.5,
                )
            )
    return rows


def write_runs(tmp_path: Path, rows: list[dict]) -> list[Path]:
    """One metrics.json per run, as `sarssl finetune` writes them."""
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        runs.setdefault(tuple(r[k] for k in tables.RUN_KEYS), []).append(r)
    paths = []
    for i, rs in enumerate(runs.values()):
        p = tmp_path / "runs" / f"run{i:03d}" / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(rs))
        paths.append(p)
    return paths


@pytest.fixture
def runs(tmp_path):
    return write_runs(tmp_path, make_rows())


# ------------------------------------------------------------------ collect / summary
def test_collect_concatenates_sorts_and_roundtrips(runs, tmp_path):
    df = tables.collect(runs[::-1])  # input order must not matter
    assert len(df) == len(make_rows())
    assert list(df.columns) == list(tables.COLUMNS)
    # sorted: land cover first, baselines before pretrained inits within a region pair
    assert df["task"].iloc[0] == "landcover" and df["task"].iloc[-1] == "treecover"
    block = df[(df.task == "landcover") & (df.finetune_area == "rome")]
    assert block["init"].drop_duplicates().tolist() == ["scratch", "mae", "dino"]
    out = tmp_path / "m.csv"
    tables.write_csv(df, out)
    back = tables.read_metrics_table(out)
    pd.testing.assert_frame_equal(back, df, check_exact=False, rtol=1e-9)


def test_summary_mean_std_nseeds(runs):
    s = tables.summarise(tables.collect(runs))
    row = s[
        (s.task == "landcover")
        & (s.init == "mae")
        & (s.protocol == "finetune")
        & (s.fraction == 0.1)
        & (s.finetune_area == "chimoio")
        & (s.metric == "miou")
    ]
    assert len(row) == 1
    v = [true_miou("mae", "finetune", 0.1, seed, "chimoio") for seed in (0, 1)]
    assert row["mean"].item() == pytest.approx(np.mean(v))
    assert row["std"].item() == pytest.approx(np.std(v, ddof=1))  # ddof=1: 0.01414...
    assert row["std"].item() == pytest.approx(0.02 / math.sqrt(2))
    assert row["n_seeds"].item() == 2
    assert row["n_train_chips"].item() == 40
    assert len(s) == len(make_rows()) // 2


def test_summary_single_seed_std_is_nan_and_nan_values_skipped():
    rows = make_rows(seeds=(0,))
    df = tables.validate_rows(pd.DataFrame(rows).astype(object), "mem")
    s = tables.summarise(df)
    assert (s["n_seeds"] == 1).all()
    assert s["std"].isna().all()
    # a NaN value (absent class) is skipped: mean of the remaining seed, n_seeds counts finite
    rows2 = make_rows()
    for r in rows2:
        if r["metric"] == "iou_water" and r["seed"] == 1:
            r["value"] = float("nan")
    s2 = tables.summarise(tables.validate_rows(pd.DataFrame(rows2).astype(object), "mem"))
    w = s2[s2.metric == "iou_water"]
    assert (w["n_seeds"] == 1).all() and w["std"].isna().all()
    ref = s[s.metric == "iou_water"]["mean"].to_numpy()
    np.testing.assert_allclose(np.sort(w["mean"].to_numpy()), np.sort(ref))


# ------------------------------------------------------------------ validation
def _break(tmp_path: Path, mutate) -> Path:
    rows = make_rows()[:3]
    mutate(rows)
    p = tmp_path / "bad_metrics.json"
    p.write_text(json.dumps(rows))
    return p


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda rows: [r.pop("seed") for r in rows], "missing column(s) seed"),
        (lambda rows: rows[1].update(fraction=0.0), "'fraction'"),
        (lambda rows: rows[1].update(fraction=1.5), "must be <= 1"),
        (lambda rows: rows[2].update(protocol="probe"), "protocol 'probe'"),
        (lambda rows: rows[0].update(task="segmentation"), "task 'segmentation'"),
        (lambda rows: rows[0].update(metric="rmse"), "metric 'rmse' is not a landcover metric"),
        (lambda rows: rows[0].update(value="high"), "'value' must be a number"),
        (lambda rows: rows[0].update(seed=-1), "'seed'"),
        (lambda rows: rows[0].update(seed=1.5), "must be an integer"),
        (lambda rows: rows[0].update(init=""), "'init' must be a non-empty string"),
        (lambda rows: rows.append(dict(rows[0])), "duplicate metric row"),
    ],
)
def test_bad_rows_rejected_naming_file(tmp_path, mutate, needle):
    p = _break(tmp_path, mutate)
    with pytest.raises(InputError) as exc:
        tables.collect([p])
    assert str(p) in str(exc.value)
    assert needle in str(exc.value)


def test_bad_json_and_missing_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('[{"task": ')
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        tables.collect([p])
    p.write_text(json.dumps({"task": "landcover"}))
    with pytest.raises(InputError, match="expected a JSON list"):
        tables.collect([p])
    with pytest.raises(InputError, match="nope.json: metrics file not found"):
        tables.collect([tmp_path / "nope.json"])


def test_same_run_in_two_files_rejected(tmp_path, runs):
    dup = tmp_path / "copy.json"
    dup.write_text(runs[0].read_text())
    with pytest.raises(InputError, match="more than one metrics file"):
        tables.collect([runs[0], dup])


def test_cli_bad_input_exit_2_and_no_partial_output(tmp_path, capsys):
    p = _break(tmp_path, lambda rows: rows[0].update(fraction=-0.5))
    out = tmp_path / "t" / "m.csv"
    rc = main(["tables", str(p), "--out", str(out), "--summary", str(tmp_path / "t" / "s.csv")])
    assert rc == 2
    assert str(p) in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ rendering
def test_markdown_bold_best_per_column(runs):
    s = tables.summarise(tables.collect(runs))
    md = tables.render_markdown(s)
    sections = md.split("### ")[1:]
    assert len(sections) == 4  # 2 tasks x (in-region, out-of-region), primary metric only
    lc_in = next(x for x in sections if x.startswith("Land cover") and "in-region" in x)
    lines = [ln for ln in lc_in.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| Init | Protocol | 1% | 10% | 100% |"
    mae_ft = next(ln for ln in lines if ln.startswith("| MAE | fine-tune"))
    # MAE fine-tune is best (highest mIoU) in every column: 0.400, 0.480, 0.560
    assert mae_ft.count("**") == 6 and "**0.400**" in mae_ft  # no predictions: no interval
    assert sum(ln.count("**") for ln in lines) == 6  # nobody else bold
    tc_in = next(x for x in sections if x.startswith("Tree cover") and "in-region" in x)
    assert "RMSE (% tree cover) (↓)" in tc_in.splitlines()[0]
    mae_ft = next(ln for ln in tc_in.splitlines() if ln.startswith("| MAE | fine-tune"))
    # lowest RMSE is best: 30 - 30 * 0.56 = 13.20 at 100%
    assert "**13.20**" in mae_ft
    scratch = next(ln for ln in tc_in.splitlines() if ln.startswith("| Scratch | fine-tune"))
    assert "**" not in scratch


def test_unet_baseline_has_no_empty_linear_probe_row():
    """The U-Net is only fine-tuned: its row appears once per table, with no empty
    'linear probe' row (Markdown and LaTeX)."""
    rows = make_rows()
    unet = [
        dict(r, init="unet") for r in rows if r["init"] == "scratch" and r["protocol"] == "finetune"
    ]
    s = tables.summarise(tables.validate_rows(pd.DataFrame(rows + unet).astype(object), "mem"))
    md = tables.render_markdown(s)
    assert md.count("| U-Net | fine-tune |") == 4
    assert "| U-Net | linear probe |" not in md
    tex = tables.render_latex(s)
    assert "U-Net & fine-tune" in tex and "U-Net & linear probe" not in tex


def test_latex_booktabs_bold_and_escaping(runs):
    rows = make_rows()
    for r in rows:
        r["finetune_area"] = "sao_paulo" if r["finetune_area"] == "chimoio" else r["finetune_area"]
    s = tables.summarise(tables.validate_rows(pd.DataFrame(rows).astype(object), "mem"))
    tex = tables.render_latex(s, ["all"])
    assert tex.count(r"\begin{tabular}") == 10  # (2 + 3 metrics) x 2 region pairs
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"sao\_paulo" in tex and "sao_paulo" not in tex
    assert r"1\% & 10\% & 100\%" in tex
    first = tex.split(r"\end{table}")[0]
    mae = next(ln for ln in first.splitlines() if ln.startswith("MAE & fine-tune"))
    assert mae.count(r"\textbf{") == 3 and r"\textbf{0.400}" in mae
    dino = next(ln for ln in first.splitlines() if ln.startswith("DINO & linear probe"))
    assert r"\textbf" not in dino


def test_best_mask_ties_and_single_values():
    idx = pd.MultiIndex.from_tuples(
        [("mae", "finetune"), ("dino", "finetune"), ("scratch", "finetune")]
    )
    mean = pd.DataFrame({0.1: [0.5, 0.5, 0.2], 1.0: [np.nan, np.nan, 0.7]}, index=idx)
    m = tables.best_mask(mean, "miou")
    assert m[0.1].tolist() == [True, True, False]  # a tie: both bold
    assert not m[1.0].any()  # one finite value: nothing to compare
    assert tables.best_mask(mean, "rmse")[0.1].tolist() == [False, False, True]


# ------------------------------------------------------------------ runs with predictions
#: Quality of the synthetic runs (share of correct pixels / 1 - relative tree-cover noise).
QUALITY = {"pixel": 0.35, "scratch": 0.45, "unet": 0.5, "mae": 0.65, "dino": 0.45}


def design(seeds=(0, 1)) -> list[tuple[dict, float]]:
    """The study design in small: controls, scratch and two pretrained inits under every
    protocol they run with, three fractions, two areas (rome in region), two tasks."""
    out = []
    for task, init, prot, frac, seed, area in itertools.product(
        ("landcover", "treecover"),
        QUALITY,
        ("finetune", "linear", "knn", "decoder"),
        FRACTIONS,
        seeds,
        ("rome", "chimoio"),
    ):
        if (init == "unet" and prot != "finetune") or (init == "pixel" and prot != "linear"):
            continue
        q = QUALITY[init] + 0.05 * math.log10(frac)
        if init == "scratch" and prot != "finetune":
            q -= 0.15  # the frozen random encoder
        run = dict(
            task=task,
            init=init,
            protocol=prot,
            fraction=frac,
            seed=seed,
            pretrain_area="rome" if init in ("mae", "dino") else "none",
            finetune_area=area,
            lr=None if prot == "knn" else 1e-3,
        )
        out.append((run, q))
    return out


@pytest.fixture(scope="module")
def pred_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return [write_finetune_run(root, run, q) for run, q in design()]


def run_tables(paths, out: Path, *extra: str) -> int:
    return main(
        [
            "tables",
            *map(str, paths),
            "--out",
            str(out / "m.csv"),
            "--summary",
            str(out / "s.csv"),
            "--markdown",
            str(out / "r.md"),
            "--latex",
            str(out / "r.tex"),
            "--label-efficiency",
            str(out / "eff.csv"),
            "--differences",
            str(out / "d.csv"),
            "--regional",
            str(out / "reg.csv"),
            "--bootstrap",
            "300",
            "--seed",
            "3",
            *extra,
        ]
    )


def test_cli_writes_all_outputs_with_intervals(pred_runs, tmp_path):
    assert run_tables(pred_runs, tmp_path) == 0
    m = pd.read_csv(tmp_path / "m.csv")
    assert list(m.columns) == list(tables.COLUMNS) + ["lr"]  # the selected lr is kept
    assert m.loc[m.protocol == "knn", "lr"].isna().all() and (m["lr"].dropna() == 1e-3).all()
    s = pd.read_csv(tmp_path / "s.csv")
    assert list(s.columns) == list(tables.SUMMARY_COLUMNS) and (s["n_seeds"] == 2).all()
    prim = s[s.metric.isin(["miou", "rmse"])]
    assert prim[["ci_low", "ci_high"]].notna().all().all()
    assert ((prim.ci_low <= prim["mean"]) & (prim["mean"] <= prim.ci_high)).all()
    # paired differences: every init but scratch, per protocol, fraction and area
    d = pd.read_csv(tmp_path / "d.csv")
    assert list(d.columns) == list(tables.DIFFERENCE_COLUMNS)
    assert set(d["init"]) == {"pixel", "unet", "mae", "dino"}
    mae = d[(d.init == "mae") & (d.task == "landcover")]
    assert (mae["verdict"] == "better").all() and (mae["ci_low"] > 0).all()
    assert set(d.loc[d.init == "pixel", "reference"]) == {"scratch/finetune"}
    assert set(d.loc[(d.init == "mae") & (d.protocol == "knn"), "reference"]) == {"scratch/knn"}
    # label efficiency: MAE detected, DINO (same quality as scratch) not detected
    eff = pd.read_csv(tmp_path / "eff.csv")
    assert len(eff) == 2 * 2 * 2 * 4  # tasks x areas x pretrained inits x protocols
    lc = eff[(eff.task == "landcover") & (eff.protocol == "finetune")]
    assert set(lc.loc[lc.init == "mae", "status"]) == {"detected"}
    dino = eff[(eff.init == "dino") & (eff.protocol == "finetune")]
    assert (dino["status"] != "detected").all()
    reg = pd.read_csv(tmp_path / "reg.csv")
    assert set(reg["in_region"]) == {"rome"} and set(reg["out_of_region"]) == {"chimoio"}
    md = (tmp_path / "r.md").read_text()
    for text in (
        "| Per-pixel control | linear probe |",
        "| Random (frozen) | k-NN probe |",
        "| U-Net | fine-tune |",
        "## Paired differences: init minus scratch",
        "## Label efficiency",
        "## Regional claim",
        "not detected",
    ):
        assert text in md, text
    # mean [low, high] cells, and the controls precede the models in every table
    block = md.split("### Land cover — mIoU (↑) — in-region")[1].split("###")[0]
    rows = [ln for ln in block.splitlines() if ln.startswith("| ") and "Init" not in ln][1:]
    assert rows[0].startswith("| Per-pixel control") and rows[4].startswith("| U-Net")
    assert re.search(r"\| 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] \|", rows[0])
    tex = (tmp_path / "r.tex").read_text()
    assert "Random (frozen)" in tex and "Init minus scratch" in tex
    assert not list(tmp_path.glob(".*tmp*"))  # no temporaries left behind
    # deterministic: the same seed gives the same intervals
    out2 = tmp_path / "again"
    assert run_tables(pred_runs, out2) == 0
    assert (out2 / "s.csv").read_bytes() == (tmp_path / "s.csv").read_bytes()


def test_missing_predictions_is_an_error_naming_the_file(pred_runs, tmp_path, capsys):
    p = pred_runs[0]
    moved = p.parent / "elsewhere.npz"
    (p.parent / "predictions.npz").rename(moved)
    try:
        assert run_tables(pred_runs, tmp_path) == 2
    finally:
        moved.rename(p.parent / "predictions.npz")
    err = capsys.readouterr().err
    assert str(p.parent / "predictions.npz") in err and "not found" in err
    assert not (tmp_path / "s.csv").exists()


def test_bootstrap_zero_reads_a_tidy_csv_without_predictions(runs, tmp_path):
    csv = tmp_path / "all.csv"
    tables.write_csv(tables.collect(runs), csv)
    out = tmp_path / "t"
    rc = main(
        ["tables", str(csv), "--out", str(out / "m.csv"), "--summary", str(out / "s.csv")]
        + ["--markdown", str(out / "r.md"), "--bootstrap", "0"]
    )
    assert rc == 0
    s = pd.read_csv(out / "s.csv")
    assert s["ci_low"].isna().all() and "**0.400**" in (out / "r.md").read_text()
    rc = main(["tables", str(csv), "--out", str(out / "m.csv"), "--summary", str(out / "s.csv")])
    assert rc == 2  # intervals need the per-run predictions


def test_metrics_that_disagree_with_their_predictions_are_reported(tmp_path, caplog):
    run = dict(design()[0][0], lr=1e-3)
    p = write_finetune_run(tmp_path / "runs", run, 0.5)
    rows = json.loads(p.read_text())
    rows[0]["value"] += 0.1  # metrics.json no longer matches predictions.npz
    p.write_text(json.dumps(rows))
    with caplog.at_level("WARNING", logger="sarssl.downstream.tables"):
        boot = tables.paired_bootstrap([p], n_boot=20)
    assert len(boot.runs) == 1
    assert str(p) in caplog.text and "from predictions.npz" in caplog.text

"""Tests for sarssl.downstream.tables: validation, collection, summaries, label efficiency,
rendering."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


# ------------------------------------------------------------------ label efficiency
def test_interpolate_crossing_by_hand():
    f = [0.01, 0.1, 1.0]
    # higher is better; target 0.45 between 0.40 @ 1% and 0.50 @ 10%: halfway in log10 -> 10^-1.5
    frac, bound = tables.interpolate_crossing(f, [0.40, 0.50, 0.60], 0.45, True)
    assert bound == "exact" and frac == pytest.approx(10**-1.5)
    # a quarter of the way: log10 f = -2 + 0.25
    frac, _ = tables.interpolate_crossing(f, [0.40, 0.50, 0.60], 0.425, True)
    assert frac == pytest.approx(10**-1.75)
    # lower is better (RMSE): 20 @ 10% -> 10 @ 100%, target 12 is 80% of the way
    frac, bound = tables.interpolate_crossing(f, [30, 20, 10], 12.0, False)
    assert bound == "exact" and frac == pytest.approx(10 ** (-1 + 0.8))
    # reached at the smallest fraction: an upper bound, not extrapolated
    assert tables.interpolate_crossing(f, [0.7, 0.8, 0.9], 0.6, True) == (0.01, "at_or_below")
    # never reached
    frac, bound = tables.interpolate_crossing(f, [0.1, 0.2, 0.3], 0.6, True)
    assert bound == "never" and math.isnan(frac)
    # non-monotone: the first crossing counts (smallest fraction), order of input irrelevant
    frac, _ = tables.interpolate_crossing([1.0, 0.1, 0.01], [0.55, 0.52, 0.40], 0.5, True)
    assert frac == pytest.approx(10 ** (-2 + 10 / 12))


def test_label_efficiency_table(runs):
    s = tables.summarise(tables.collect(runs))
    eff = tables.label_efficiency(s)
    assert list(eff.columns) == list(tables.EFFICIENCY_COLUMNS)
    # 2 tasks x 2 region pairs x 2 pretrained inits x 2 protocols
    assert len(eff) == 16 and set(eff["init"]) == {"mae", "dino"}
    row = eff[
        (eff.task == "landcover")
        & (eff.init == "mae")
        & (eff.protocol == "finetune")
        & (eff.finetune_area == "rome")
    ].iloc[0]
    # scratch@100% = 0.40; MAE mean curve 0.40 @ 1% already (0.56 - 0.16) -> at_or_below
    assert row["reference_value"] == pytest.approx(0.40)
    assert row["bound"] == "at_or_below" and row["label"] == "≤1%"
    row = eff[
        (eff.task == "landcover")
        & (eff.init == "dino")
        & (eff.protocol == "finetune")
        & (eff.finetune_area == "rome")
    ].iloc[0]
    # DINO: 0.33 @ 1%, 0.41 @ 10% -> t = (0.40-0.33)/0.08; f = 10^(-2 + t)
    expected = 10 ** (-2 + 0.07 / 0.08)
    assert row["fraction_needed"] == pytest.approx(expected)
    assert row["label_reduction"] == pytest.approx(1 / expected)
    assert row["label"] == tables.format_fraction(expected) == "7.5%"
    # tree cover (lower RMSE is better) gives the same crossing: RMSE = 30 - 30 mIoU
    tc = eff[
        (eff.task == "treecover")
        & (eff.init == "dino")
        & (eff.protocol == "finetune")
        & (eff.finetune_area == "rome")
    ].iloc[0]
    assert tc["metric"] == "rmse" and tc["fraction_needed"] == pytest.approx(expected)
    # DINO linear in chimoio: 0.36 @ 100% vs scratch chimoio 0.34 -> crosses; scratch at 100%
    # in chimoio is the reference, not rome's
    lin = eff[
        (eff.task == "landcover")
        & (eff.init == "dino")
        & (eff.protocol == "linear")
        & (eff.finetune_area == "chimoio")
    ].iloc[0]
    assert lin["reference_value"] == pytest.approx(0.34)
    assert lin["fraction_needed"] == pytest.approx(10 ** (-1 + (0.34 - 0.28) / 0.08))


def test_label_efficiency_never_reached():
    rows = [r for r in make_rows() if r["task"] == "landcover"]
    for r in rows:  # cripple DINO linear probing
        if r["init"] == "dino" and r["protocol"] == "linear":
            r["value"] -= 0.5
    s = tables.summarise(tables.validate_rows(pd.DataFrame(rows).astype(object), "mem"))
    eff = tables.label_efficiency(s)
    row = eff[(eff.init == "dino") & (eff.protocol == "linear")]
    assert (row["bound"] == "never").all() and (row["label"] == ">100%").all()
    assert row["fraction_needed"].isna().all()


# ------------------------------------------------------------------ rendering
def test_markdown_bold_best_per_column(runs):
    s = tables.summarise(tables.collect(runs))
    md = tables.render_markdown(s)
    sections = md.split("## ")[1:]
    assert len(sections) == 4  # 2 tasks x (in-region, out-of-region), primary metric only
    lc_in = next(x for x in sections if x.startswith("Land cover") and "in-region" in x)
    lines = [ln for ln in lc_in.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| Init | Protocol | 1% | 10% | 100% |"
    mae_ft = next(ln for ln in lines if ln.startswith("| MAE | fine-tune"))
    # MAE fine-tune is best (highest mIoU) in every column: 0.400, 0.480, 0.560
    assert mae_ft.count("**") == 6 and "**0.400 ± 0.014**" in mae_ft
    assert sum(ln.count("**") for ln in lines) == 6  # nobody else bold
    tc_in = next(x for x in sections if x.startswith("Tree cover") and "in-region" in x)
    assert "RMSE (% tree cover) (↓)" in tc_in.splitlines()[0]
    mae_ft = next(ln for ln in tc_in.splitlines() if ln.startswith("| MAE | fine-tune"))
    # lowest RMSE is best: 30 - 30 * 0.56 = 13.20 at 100%
    assert "**13.20 ± 0.42**" in mae_ft
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
    assert mae.count(r"\textbf{") == 3 and r"\textbf{0.400 $\pm$ 0.014}" in mae
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


def test_cli_writes_all_outputs(runs, tmp_path):
    t = tmp_path / "tables"
    rc = main(
        [
            "tables",
            *map(str, runs),
            "--out",
            str(t / "m.csv"),
            "--summary",
            str(t / "s.csv"),
            "--markdown",
            str(t / "s.md"),
            "--latex",
            str(t / "s.tex"),
            "--label-efficiency",
            str(t / "eff.csv"),
        ]
    )
    assert rc == 0
    m = pd.read_csv(t / "m.csv")
    assert len(m) == len(make_rows()) and list(m.columns) == list(tables.COLUMNS)
    s = pd.read_csv(t / "s.csv")
    assert list(s.columns) == list(tables.SUMMARY_COLUMNS) and (s["n_seeds"] == 2).all()
    eff = pd.read_csv(t / "eff.csv")
    assert len(eff) == 16
    assert "**" in (t / "s.md").read_text() and r"\textbf" in (t / "s.tex").read_text()
    assert not list(t.glob(".*tmp*"))  # no temporaries left behind

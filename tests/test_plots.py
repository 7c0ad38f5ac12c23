"""Tests for sarssl.figures.registry: figure content (data, scales, labels, styles) and the CLI."""

from __future__ import annotations

import itertools
import json
import math

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from sarssl.cli import main
from sarssl.downstream import tables
from sarssl.figures import cli as figures_cli
from sarssl.figures import curves, registry

FRACTIONS = (0.01, 0.1, 1.0)
BASE = {"scratch": 0.40, "mae": 0.56, "dino": 0.49}


def make_metrics(seeds=(0, 1)) -> pd.DataFrame:
    """Tidy rows: 3 inits x 2 protocols x 3 fractions x seeds x 2 regions x 2 tasks.

    Seed noise differs per init and fraction so means and stds are not all alike.
    """
    rows = []
    for task, init, prot, (k, frac), seed, fa in itertools.product(
        ("landcover", "treecover"),
        BASE,
        ("finetune", "linear"),
        enumerate(FRACTIONS),
        seeds,
        ("rome", "chimoio"),
    ):
        noise = (0.005 + 0.004 * k + 0.002 * list(BASE).index(init)) * (1 if seed else -1)
        m = (
            BASE[init]
            - (0.07 if prot == "linear" else 0)
            - (0.06 if fa == "chimoio" else 0)
            + 0.08 * math.log10(frac)
            + noise
        )
        mets = (
            {"miou": m, "overall_accuracy": m + 0.2}
            if task == "landcover"
            else {"rmse": 30 - 30 * m, "r2": m}
        )
        for metric, v in mets.items():
            rows.append(
                dict(
                    task=task,
                    init=init,
                    protocol=prot,
                    fraction=frac,
                    seed=seed,
                    pretrain_area="rome",
                    finetune_area=fa,
                    n_train_chips=int(400 * frac),
                    metric=metric,
                    value=v,
                    epochs=5,
                    wall_s=1.0,
                )
            )
    return tables.validate_rows(pd.DataFrame(rows).astype(object), "fixture")


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return make_metrics()


def with_intervals(metrics: pd.DataFrame) -> pd.DataFrame:
    """The summary with synthetic, asymmetric intervals (as `sarssl tables` writes them)."""
    s = tables.summarise(metrics)
    s["ci_low"] = s["mean"] - 0.01 - 0.02 * s["fraction"]
    s["ci_high"] = s["mean"] + 0.03
    return s


@pytest.fixture(scope="module")
def summary(metrics) -> pd.DataFrame:
    return with_intervals(metrics)


@pytest.fixture(scope="module")
def fig(summary):
    return curves.learning_curves(summary)


def _artists(fig, kind):
    out = {}
    for ax in fig.axes:
        items = ax.get_lines() if kind == "line" else ax.collections
        for a in items:
            gid = a.get_gid()
            if gid and gid.startswith(kind + "|"):
                out[gid.split("|", 1)[1]] = (ax, a)
    return out


def test_layout_axes_labels_titles(fig):
    axes = np.array(fig.axes).reshape(2, 2)
    assert axes[0, 0].get_ylabel() == "mIoU"
    assert axes[1, 0].get_ylabel() == "RMSE (% tree cover)"
    for ax in axes.ravel():
        assert ax.get_xscale() == "log"
        np.testing.assert_allclose(ax.get_xticks(), FRACTIONS)
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == ["1%", "10%", "100%"]
    assert axes[1, 1].get_xlabel() == "Label fraction (% of training chips)"
    t = [ax.get_title() for ax in axes.ravel()]
    assert "Land cover, in-region" in t[0] and "pretrain rome → fine-tune rome" in t[0]
    assert "Land cover, out-of-region" in t[1] and "fine-tune chimoio" in t[1]
    assert t[2].startswith("Tree cover, in-region") and t[3].startswith("Tree cover, out-of-region")


def test_lines_are_seed_means_and_bands_are_confidence_intervals(fig, metrics, summary):
    s = summary
    lines, bands = _artists(fig, "line"), _artists(fig, "band")
    assert len(lines) == 2 * 2 * 3 * 2
    # every curve has its band except the frozen random encoder (a thin reference line)
    assert set(bands) == {t for t in lines if not t.endswith("scratch|linear")}
    for tag, (ax, line) in lines.items():
        task, pa, fa, init, protocol = tag.split("|")
        metric = tables.PRIMARY_METRIC[task]
        ref = s[
            (s.task == task)
            & (s.finetune_area == fa)
            & (s.init == init)
            & (s.protocol == protocol)
            & (s.metric == metric)
        ].sort_values("fraction")
        # direct check against the raw rows, not only against summarise()
        raw = metrics[
            (metrics.task == task)
            & (metrics.finetune_area == fa)
            & (metrics.init == init)
            & (metrics.protocol == protocol)
            & (metrics.metric == metric)
        ]
        by_f = raw.groupby("fraction")["value"]
        np.testing.assert_allclose(line.get_xdata(), FRACTIONS)
        np.testing.assert_allclose(line.get_ydata(), ref["mean"].to_numpy())
        np.testing.assert_allclose(line.get_ydata(), by_f.mean().to_numpy())
        # style: linear probing dashed, full fine-tuning solid; colour by init
        assert line.get_linestyle() == ("--" if protocol == "linear" else "-")
        assert mcolors.same_color(line.get_color(), registry.INIT_COLORS[init])
        if tag not in bands:
            assert init == "scratch" and protocol == "linear" and line.get_marker() == "None"
            continue
        verts = bands[tag][1].get_paths()[0].vertices
        for x, lo, hi in zip(FRACTIONS, ref["ci_low"], ref["ci_high"], strict=True):
            ys = verts[np.isclose(verts[:, 0], x), 1]
            assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
        assert bands[tag][0] is ax


def test_colours_consistent_and_legend(fig):
    assert mcolors.to_hex(registry.INIT_COLORS["scratch"]) == "#7f7f7f"  # grey
    assert mcolors.to_rgb(registry.init_color("mae"))[2] > 0.6  # blue
    assert registry.init_color("my_ckpt") == registry.init_color("my_ckpt")  # stable for new names
    (leg,) = fig.legends
    texts = [t.get_text() for t in leg.get_texts()]
    assert texts == [
        "Random (frozen)",
        "Scratch",
        "MAE",
        "DINO",
        "full fine-tuning",
        "linear probing",
    ]
    styles = {h.get_label(): h.get_linestyle() for h in leg.legend_handles}
    assert styles["linear probing"] == "--" and styles["full fine-tuning"] == "-"


def test_no_interval_no_band():
    # tidy rows carry no predictions, hence no interval: curves without bands
    f = curves.learning_curves(make_metrics(seeds=(0,)))
    assert _artists(f, "line") and not _artists(f, "band")


def test_controls_are_drawn_in_every_panel():
    """Per-pixel control (black) and random frozen encoder (grey) as thin reference curves
    without band or markers; the U-Net as a full curve with its band."""
    df = make_metrics()
    pixel = df[(df.init == "scratch") & (df.protocol == "linear")].assign(init="pixel")
    unet = df[(df.init == "scratch") & (df.protocol == "finetune")].assign(init="unet")
    f = curves.learning_curves(with_intervals(pd.concat([df, pixel, unet])))
    lines, bands = _artists(f, "line"), _artists(f, "band")
    for task in ("landcover", "treecover"):
        for fa in ("rome", "chimoio"):
            px = lines[f"{task}|rome|{fa}|pixel|linear"][1]
            assert mcolors.same_color(px.get_color(), "black") and px.get_linestyle() == "--"
            assert px.get_marker() == "None" and px.get_linewidth() < 1.0
            rnd = lines[f"{task}|rome|{fa}|scratch|linear"][1]
            assert mcolors.same_color(rnd.get_color(), registry.INIT_COLORS["scratch"])
            assert f"{task}|rome|{fa}|pixel|linear" not in bands
            assert f"{task}|rome|{fa}|unet|finetune" in bands
    texts = [t.get_text() for t in f.legends[0].get_texts()]
    assert texts[:3] == ["Per-pixel control", "Random (frozen)", "U-Net"]


def test_baseline_with_other_pretrain_area_joins_every_panel():
    df = make_metrics()
    df.loc[df.init == "scratch", "pretrain_area"] = "none"  # scratch never saw a pretrain area
    lines = _artists(curves.learning_curves(df), "line")
    assert "landcover|rome|chimoio|scratch|finetune" in lines
    assert "landcover|rome|rome|scratch|finetune" in lines


def efficiency_table() -> pd.DataFrame:
    """A label-efficiency table as `sarssl tables --label-efficiency` writes it."""
    rows = []
    for task, metric in (("landcover", "miou"), ("treecover", "rmse")):
        for fa in ("rome", "chimoio"):
            for init, protocol, status, frac, lo, hi in (
                ("mae", "finetune", "detected", 0.05, 0.02, 0.2),
                ("mae", "linear", "detected", 0.3, 0.1, np.inf),
                ("dino", "finetune", "not detected", 0.5, 0.1, np.inf),
                ("dino", "linear", "not reached", np.nan, np.inf, np.inf),
            ):
                rows.append(
                    dict(
                        task=task,
                        metric=metric,
                        init=init,
                        protocol=protocol,
                        pretrain_area="rome",
                        finetune_area=fa,
                        reference_value=0.4,
                        fraction_needed=frac,
                        ci_low=lo,
                        ci_high=hi,
                        bound="never" if status == "not reached" else "exact",
                        gain=0.1,
                        gain_low=0.05 if status != "not detected" else -0.01,
                        gain_high=0.2,
                        status=status,
                        label=f"{100 * frac:g}% [...]" if status == "detected" else status,
                        label_reduction=1 / frac if status == "detected" else np.nan,
                    )
                )
    return pd.DataFrame(rows, columns=list(tables.EFFICIENCY_COLUMNS))


def test_label_efficiency_bars_with_intervals_and_not_detected():
    eff = efficiency_table()
    f = curves.label_efficiency_chart(eff)
    bars, cis, labels = {}, {}, {}
    for ax in f.axes:
        for p in ax.patches:
            if (p.get_gid() or "").startswith("bar|"):
                bars[p.get_gid().split("|", 1)[1]] = (ax, p)
        for c in ax.collections:
            if (c.get_gid() or "").startswith("ci|"):
                cis[c.get_gid().split("|", 1)[1]] = c
        for t in ax.texts:
            if (t.get_gid() or "").startswith("label|"):
                labels[t.get_gid().split("|", 1)[1]] = t.get_text()
    assert len(bars) == len(eff) == 16
    for r in eff.itertuples():
        tag = f"{r.task}|{r.pretrain_area}|{r.finetune_area}|{r.init}|{r.protocol}"
        ax, p = bars[tag]
        if r.status == "detected":
            assert p.get_height() == pytest.approx(100 * r.fraction_needed)
            assert p.get_facecolor()[3] > 0
            (seg,) = cis[tag].get_segments()
            lo, hi = sorted(seg[:, 1])
            assert lo == pytest.approx(100 * r.ci_low)
            # an interval beyond the largest fraction runs off the 100 % line
            assert hi == pytest.approx(100 * r.ci_high) if np.isfinite(r.ci_high) else hi > 100
            assert labels[tag] == r.label
        else:
            assert p.get_height() == pytest.approx(100.0) and p.get_facecolor()[3] == 0
            assert tag not in cis and labels[tag] == r.status
            grey = mcolors.same_color(p.get_edgecolor(), "0.6")
            assert grey == (r.status == "not detected")
        assert bool(p.get_hatch()) == (r.protocol == "linear")
        assert ax.get_yscale() == "log"
    texts = [t.get_text() for t in f.legends[0].get_texts()]
    assert texts == [
        "MAE",
        "DINO",
        "full fine-tuning",
        "linear probing",
        "scratch, 100% labels",
        "gain not detected",
    ]


def test_cli_writes_png_and_vector_pdf(metrics, summary, tmp_path):
    csv = tmp_path / "finetune_summary.csv"
    tables.write_csv(summary, csv)
    out = tmp_path / "fig" / "learning_curves.png"
    assert main(["plot", "learning-curves", "--summary", str(csv), "--out", str(out)]) == 0
    png, pdf = out.read_bytes(), out.with_suffix(".pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pdf[:5] == b"%PDF-"
    assert b"/Subtype /Image" not in pdf  # vector: no embedded raster
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    fw, fh = curves.learning_curves(summary).get_size_inches()
    assert (w, h) == (round(fw * 300), round(fh * 300))  # 300 dpi
    out2 = tmp_path / "fig" / "label_efficiency.png"
    eff = tmp_path / "label_efficiency.csv"
    tables.write_csv(efficiency_table(), eff)
    assert main(["plot", "label-efficiency", "--efficiency", str(eff), "--out", str(out2)]) == 0
    assert out2.exists() and out2.with_suffix(".pdf").exists()
    assert not list(out.parent.glob(".*tmp*"))


def test_registry_and_bad_input(tmp_path, capsys):
    assert {"learning-curves", "label-efficiency"} <= set(figures_cli.FIGURES)
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps([{"task": "landcover", "init": "mae"}]))
    out = tmp_path / "x.png"
    assert main(["plot", "learning-curves", "--metrics", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "missing column" in err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["plot", "no-such-figure", "--out", str(out)])
    csv = tmp_path / "m.csv"
    tables.write_csv(make_metrics(), csv)
    assert (
        main(["plot", "learning-curves", "--metrics", str(csv), "--out", str(tmp_path / "x.jpg")])
        == 2
    )
    assert "must end in .png" in capsys.readouterr().err

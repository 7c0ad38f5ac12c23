"""Figures of sarssl.figures: built from tiny fixtures; checks what is drawn, not only files."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from affine import Affine
from matplotlib.colors import to_hex, to_rgb
from pyproj import CRS

from sarssl import CHANNELS, SEASONS, cli
from sarssl.data.loaders import load_chips
from sarssl.data.normalize import denormalize_batch, normalize_batch
from sarssl.errors import InputError, SarsslError
from sarssl.figures import (
    attention,
    common,
    composites,
    datastats,
    embeddings,
    qa,
    qualitative,
    reconstruction,
)
from sarssl.figures import cli as figures_cli
from sarssl.io import write_geotiff
from sarssl.vocabulary import SPLITS, WORLDCOVER_CODES, WORLDCOVER_COLORS, WORLDCOVER_LABELS

S = 16  # chip size (px)
P = 4  # ViT patch size
CRS_UTM = CRS.from_epsg(32633)
# class -> (VV, VH) dB; + a seasonal offset, so seasons differ
CLASS_DB = {0: (-8.0, -14.0), 3: (-11.0, -19.0), 4: (-4.0, -11.0), 7: (-21.0, -27.0)}


def _synth_x(landcover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """12-channel dB stack (CHANNELS order) from a class map: class means + noise."""
    x = np.zeros((len(CHANNELS),) + landcover.shape, np.float32)
    for s, season in enumerate(SEASONS):
        vv = np.full(landcover.shape, np.nan, np.float32)
        vh = np.full(landcover.shape, np.nan, np.float32)
        for k, (a, b) in CLASS_DB.items():
            m = landcover == k
            vv[m] = a + 0.8 * s + rng.normal(0, 1.0, m.sum())
            vh[m] = b - 0.5 * s + rng.normal(0, 1.0, m.sum())
        x[CHANNELS.index(f"vv_{season}")] = vv
        x[CHANNELS.index(f"vh_{season}")] = vh
        x[CHANNELS.index(f"vvvh_{season}")] = vv - vh
    return x


def _class_map(shape, rng) -> np.ndarray:
    """Blocky class map with the classes of CLASS_DB (and a few ignored pixels)."""
    h, w = shape
    coarse = rng.choice(list(CLASS_DB), size=(-(-h // 8), -(-w // 8)))
    lc = np.kron(coarse, np.ones((8, 8), np.int64))[:h, :w].astype(np.uint8)
    return lc


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend_labels(fig) -> list[str]:
    out = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.axes:
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out


def _by_gid(fig, prefix: str) -> dict[str, object]:
    return {
        a.get_gid(): a
        for ax in fig.axes
        for a in ax.get_children()
        if isinstance(a.get_gid(), str) and a.get_gid().startswith(prefix)
    }


def _run_plot(argv: list[str]) -> int:
    return cli.main(["plot", *argv])


# ----------------------------------------------------------------------- common helpers
def test_false_colour_stretch_hand_values():
    lo_vv, hi_vv = common.FALSE_COLOUR_STRETCH["vv"]
    lo_vh, hi_vh = common.FALSE_COLOUR_STRETCH["vh"]
    lo_r, hi_r = common.FALSE_COLOUR_STRETCH["vvvh"]
    vv = np.array([[(lo_vv + hi_vv) / 2, hi_vv + 5, np.nan]])
    vh = np.array([[lo_vh + 0.25 * (hi_vh - lo_vh), lo_vh - 3, -20.0]])
    ratio = np.array([[lo_r + 0.75 * (hi_r - lo_r), lo_r, 5.0]])
    rgb = common.false_colour(vv, vh, ratio)
    assert rgb.shape == (1, 3, 3)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.25, 0.75])
    np.testing.assert_allclose(rgb[0, 1], [1.0, 0.0, 0.0])  # clipped
    np.testing.assert_allclose(rgb[0, 2], [1.0, 1.0, 1.0])  # no data -> white
    # default blue channel = VV - VH
    np.testing.assert_allclose(
        common.false_colour(vv[:, :1], vh[:, :1])[..., 2],
        common.stretch(vv[:, :1] - vh[:, :1], lo_r, hi_r),
    )


def test_landcover_colours_are_worldcover_official():
    assert WORLDCOVER_COLORS[0] == "#006400" and WORLDCOVER_COLORS[7] == "#0064c8"
    assert WORLDCOVER_COLORS[10] == "#fae6a0" and len(WORLDCOVER_COLORS) == 11
    cmap, norm = common.landcover_cmap()
    for k in range(11):
        assert to_hex(cmap(norm(k))) == WORLDCOVER_COLORS[k]
    rgb = common.landcover_rgb(np.array([[4, 255]]))
    np.testing.assert_allclose(rgb[0, 0], to_rgb("#fa0000"))
    np.testing.assert_allclose(rgb[0, 1], [1, 1, 1])
    labels = [h.get_label() for h in common.landcover_legend_handles([7, 0, 0])]
    assert labels == ["10 Tree cover", "80 Permanent water bodies"]


def test_parse_named_paths():
    got = common.parse_named_paths(["mae=a/b.npz", "runs/dino/predictions.npz"], "--x")
    assert list(got) == ["mae", "dino"]
    with pytest.raises(SarsslError, match="twice"):
        common.parse_named_paths(["a=x", "a=y"], "--x")


# ----------------------------------------------------------------------- composites
@pytest.fixture(scope="module")
def composite_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("comp")
    rng = np.random.default_rng(1)
    lc = _class_map((40, 48), rng)
    x = _synth_x(lc, rng)
    x[:, :2, :3] = np.nan
    tr = Affine(10.0, 0, 300000.0, 0, -10.0, 4650000.0)
    write_geotiff(
        d / "rome.tif",
        x,
        crs=CRS_UTM,
        transform=tr,
        nodata=float("nan"),
        band_names=CHANNELS,
        tags={"CHANNELS": json.dumps(list(CHANNELS)), "COMPOSITE_METHOD": "mean", "YEAR": 2021},
    )
    codes = np.array(WORLDCOVER_CODES)[lc]
    codes[-1, -1] = 0  # an unknown code -> ignored
    write_geotiff(d / "landcover.tif", codes.astype(np.uint8), crs=CRS_UTM, transform=tr, nodata=0)
    return d, x, lc


def test_composites_figure_shows_the_stretch(composite_files, tmp_path):
    d, x, _ = composite_files
    fig = composites.composites_figure(x, resolution=10.0)
    imgs = _by_gid(fig, "composite|")
    assert sorted(imgs) == sorted(f"composite|{s}" for s in SEASONS)
    for s in SEASONS:
        np.testing.assert_allclose(
            imgs[f"composite|{s}"].get_array(), common.season_false_colour(x, s)
        )
    # seasons really differ (the fixture shifts VV per season)
    assert not np.allclose(
        imgs["composite|winter"].get_array(), imgs["composite|summer"].get_array()
    )
    assert "1 km" not in _texts(fig)  # 48 px x 10 m < 1.25 km: no scale bar that would not fit
    out = tmp_path / "composites.png"
    assert _run_plot(["composites", "--composite", str(d / "rome.tif"), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.with_suffix(".pdf").stat().st_size > 1000


def test_composite_with_wrong_band_count_is_rejected(tmp_path):
    tr = Affine(10.0, 0, 0, 0, -10.0, 0)
    write_geotiff(tmp_path / "bad.tif", np.zeros((3, 4, 4), np.float32), crs=CRS_UTM, transform=tr)
    with pytest.raises(InputError, match="bad.tif: 3 bands"):
        composites.read_composite(str(tmp_path / "bad.tif"))
    assert (
        _run_plot(
            [
                "composites",
                "--composite",
                str(tmp_path / "missing.tif"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )


def test_backscatter_distributions_medians_and_colours(composite_files, tmp_path):
    d, x, lc = composite_files
    fig = composites.backscatter_distributions(x, lc, max_per_class=10_000)
    bodies = _by_gid(fig, "violin|")
    present = sorted(int(k) for k in np.unique(lc))
    assert len(bodies) == 2 * 4 * len(present)
    for k in present:
        body = bodies[f"violin|VH|summer|{k}"]
        assert to_hex(body.get_facecolor()[0][:3]) == WORLDCOVER_COLORS[k]
    # the median markers sit at the per-class medians of the plotted band
    ax = next(
        a for a in fig.axes if any(c.get_gid() == "violin|VV|spring|0" for c in a.get_children())
    )
    vv = x[CHANNELS.index("vv_spring")]
    medians = sorted(np.median(vv[(lc == k) & np.isfinite(vv)]) for k in present)
    seg_y = sorted(
        seg[0, 1]
        for coll in ax.collections
        if coll.get_gid() is None
        for seg in getattr(coll, "get_segments", list)()
    )
    np.testing.assert_allclose(seg_y, medians, atol=1e-4)
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels == [WORLDCOVER_LABELS[k] for k in present]
    # CLI: truth raster read onto the composite grid (WorldCover codes -> classes)
    out = tmp_path / "dist.png"
    assert (
        _run_plot(
            [
                "backscatter-distributions",
                "--composite",
                str(d / "rome.tif"),
                "--landcover",
                str(d / "landcover.tif"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.exists()


def test_class_samples_is_seeded_and_capped():
    v = np.arange(1000.0)
    c = np.r_[np.zeros(990, int), np.ones(10, int)]
    a = composites.class_samples(v, c, max_per_class=100, seed=3)
    b = composites.class_samples(v, c, max_per_class=100, seed=3)
    assert list(a) == [0] and a[0].size == 100 and np.array_equal(a[0], b[0])  # class 1 < 20 px


# ----------------------------------------------------------------------- chip store
@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    from sarssl.data.store import write_store

    d = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(7)
    n = 15
    lc = np.stack([_class_map((S, S), rng) for _ in range(n)])
    lc[0, :2, :2] = 255
    x = np.stack([_synth_x(m, rng) for m in lc]).astype(np.float16)
    tc = np.where(lc == 0, 80.0, 10.0).astype(np.float16)
    return write_store(d / "rome", x, lc, tc, area="rome", crs=CRS_UTM, seed=0)


@pytest.fixture(scope="module")
def stats(store_dir):
    from sarssl.data.store import ChipStore

    x = np.asarray(ChipStore(store_dir).x, dtype=np.float32)
    return {
        "channels": list(CHANNELS),
        "mean": np.nanmean(x, axis=(0, 2, 3)).tolist(),
        "std": np.nanstd(x, axis=(0, 2, 3)).tolist(),
    }


def test_data_statistics_counts_and_shares(store_dir, tmp_path):
    from sarssl.data.store import ChipStore

    cat = pd.DataFrame(
        {
            "product_id": list("abcdef"),
            "start_time": [
                "2020-12-15T05:00:00",
                "2021-02-28T23:59:00",
                "2021-03-01T00:00:00",
                "2021-07-01T05:00:00",
                "2021-11-30T05:00:00",
                "2021-12-05T05:00:00",
            ],
        }
    )
    counts = datastats.scenes_per_season(cat, 2021)
    assert counts.to_dict() == {"winter": 2, "spring": 1, "summer": 1, "fall": 1, "outside": 1}
    store = ChipStore(store_dir)
    idx = store.index.sort_values("row")
    px = datastats.class_pixel_counts(store, chunk=4)
    lc = np.asarray(store.landcover)
    for s in SPLITS:
        m = lc[(idx["split"] == s).to_numpy()]
        assert px.loc[s].sum() == (m != 255).sum()
        assert px.loc[s, 3] == (m == 3).sum()
    chips = datastats.split_counts(idx)
    fig = datastats.data_statistics({"rome": counts}, {"rome": chips}, {"rome": px})
    bars = _by_gid(fig, "")
    assert bars["scenes|rome|winter"].get_height() == 2
    assert bars["chips|rome|train"].get_height() == chips["train"] == 9
    fig.canvas.draw()
    for ax in fig.axes[:2]:  # scene and chip counts: whole-number ticks only
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    for s in SPLITS:
        total = sum(b.get_height() for g, b in bars.items() if g.startswith(f"share|rome|{s}|"))
        assert total == pytest.approx(100.0)
    assert "10 Tree cover" in _legend_labels(fig) and "outside" in _legend_labels(fig)
    # CLI with a catalogue CSV and the store
    cat.to_csv(tmp_path / "rome.csv", index=False)
    out = tmp_path / "stats.png"
    assert (
        _run_plot(
            [
                "data-statistics",
                "--catalogue",
                str(tmp_path / "rome.csv"),
                "--year",
                "2021",
                "--chips-dir",
                str(store_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.exists()
    assert (
        _run_plot(["data-statistics", "--catalogue", str(tmp_path / "rome.csv"), "--out", str(out)])
        == 2
    )  # --year missing


# ----------------------------------------------------------------------- qualitative
def test_qualitative_panels_match_predictions(store_dir, tmp_path):
    from sarssl.data.store import ChipStore

    store = ChipStore(store_dir)
    test_rows = store.rows("test")
    ids = np.asarray(store.index.set_index("row").loc[test_rows, "id"], dtype=str)
    truth = np.asarray(store.landcover[test_rows])
    paths = {}
    for k, name in enumerate(("scratch", "mae", "dino")):
        pred = truth.copy()
        pred[:, : k * 4] = 7  # increasingly wrong
        pred[pred == 255] = 0
        paths[name] = tmp_path / f"{name}.npz"
        np.savez_compressed(paths[name], rows=test_rows, ids=ids, pred=pred, target=truth)
    np.savez_compressed(
        tmp_path / "tc.npz",
        rows=test_rows,
        ids=ids,
        pred=np.full(len(ids), 42.0, np.float32),
        target=np.zeros(len(ids), np.float32),
    )
    runs = {k: qualitative.read_predictions(str(v)) for k, v in paths.items()}
    x = np.asarray(store.x[test_rows], dtype=np.float32)
    tc = np.asarray(store.treecover[test_rows], dtype=np.float32)
    fig = qualitative.qualitative_figure(
        x, truth, ids, {k: r.pred for k, r in runs.items()}, tc, {"mae": np.full(len(ids), 42.0)}
    )
    imgs = _by_gid(fig, "lc|")
    assert len(imgs) == 4 * len(ids)
    np.testing.assert_array_equal(imgs["lc|truth|0"].get_array().filled(255), truth[0])
    np.testing.assert_array_equal(np.asarray(imgs["lc|dino|1"].get_array()), runs["dino"].pred[1])
    assert len(fig.axes) >= len(ids) * 5  # input, truth, 3 predictions, tree cover
    assert "acc 100%" in _texts(fig)  # scratch predicts the truth exactly
    assert any("MAE 42%" in t for t in _texts(fig))
    assert "80 Permanent water bodies" in _legend_labels(fig)
    out = tmp_path / "qual.png"
    argv = [
        "qualitative",
        "--chips-dir",
        str(store_dir),
        "--n-chips",
        "2",
        "--out",
        str(out),
        "--landcover",
        *[f"{k}={v}" for k, v in paths.items()],
        "--treecover",
        f"mae={tmp_path / 'tc.npz'}",
    ]
    assert _run_plot(argv) == 0 and out.exists()
    np.savez_compressed(tmp_path / "bad.npz", ids=ids)
    with pytest.raises(InputError, match="bad.npz: missing key"):
        qualitative.read_predictions(str(tmp_path / "bad.npz"))


def test_select_rows_prefers_diverse_chips_deterministically(store_dir):
    from sarssl.data.store import ChipStore

    store = ChipStore(store_dir)
    a = common.select_rows(store, 3, seed=1, split=None)
    assert np.array_equal(a, common.select_rows(store, 3, seed=1, split=None))
    lc = np.asarray(store.landcover)
    div = [np.unique(m[m != 255]).size for m in lc]
    assert min(div[r] for r in a) >= sorted(div, reverse=True)[2]


# ----------------------------------------------------------------------- encoders
@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory, stats):
    from sarssl.encoders import create_backbone, export_encoder

    torch.manual_seed(0)
    # as ``sarssl pretrain --method dino`` exports it (dynamic_img_size for the local crops)
    kwargs = {
        "in_chans": 12,
        "img_size": S,
        "patch_size": P,
        "embed_dim": 24,
        "depth": 2,
        "num_heads": 2,
        "dynamic_img_size": True,
    }
    bb = create_backbone("vit_tiny_patch16_224", **kwargs)
    path = tmp_path_factory.mktemp("enc") / "dino" / "encoder.safetensors"
    path.parent.mkdir()
    export_encoder(
        bb, path, model_name="vit_tiny_patch16_224", model_kwargs=kwargs, method="dino", stats=stats
    )
    return path


def test_attention_maps_normalised_and_upsampled(store_dir, stats, encoder_path, tmp_path):
    from sarssl.data.store import ChipStore, load_stats
    from sarssl.encoders import load_encoder

    bb, _meta = load_encoder(encoder_path)
    store = ChipStore(store_dir)
    rows = common.select_rows(store, 3, seed=0)
    x = load_chips(store, rows, arrays=("x",))["x"].float().numpy()
    mean, std = load_stats(stats)
    maps = attention.attention_maps(bb, normalize_batch(x, mean, std))
    assert maps.shape == (3, 2, S // P, S // P)
    np.testing.assert_allclose(maps.sum(axis=(-2, -1)), 1.0, atol=1e-9)
    assert (maps > 0).all()
    up = attention.upsample(maps, P)
    assert up.shape == (3, 2, S, S)
    np.testing.assert_array_equal(up[1, 0, P : 2 * P, :P], maps[1, 0, 1, 0])
    fig = attention.attention_figure(x, np.asarray(store.landcover[rows]), maps, P)
    imgs = _by_gid(fig, "attn|")
    assert len(imgs) == 3 * 3  # 2 heads + mean per chip
    np.testing.assert_allclose(imgs["attn|2|1"].get_array(), up[2, 1])
    np.testing.assert_allclose(imgs["attn|0|mean"].get_array(), up[0].mean(0))
    assert [a.get_title() for a in fig.axes[:5]] == [
        "SAR input (summer)",
        "Land cover: truth",
        "head 1",
        "head 2",
        "mean of heads",
    ]
    out = tmp_path / "att.png"
    assert (
        _run_plot(
            [
                "attention",
                "--encoder",
                str(encoder_path),
                "--chips-dir",
                str(store_dir),
                "--n-chips",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
        and out.exists()
    )


def test_embeddings_pca_and_figure(store_dir, encoder_path, tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    z = np.column_stack([3 * t, -3 * t, 0.1 * rng.normal(size=200), np.zeros(200)])
    scores, ratio = embeddings.pca_2d(z)
    assert ratio[0] > 0.99 and ratio[0] >= ratio[1]
    assert abs(np.corrcoef(scores[:, 0], t)[0, 1]) > 0.999
    assert abs(np.dot(scores[:, 0], scores[:, 1])) < 1e-6 * np.dot(scores[:, 0], scores[:, 0])
    maj = np.array([0, 3, 255, 7] * 50)
    area = np.array(["rome"] * 100 + ["chimoio"] * 100)
    fig = embeddings.embeddings_figure(
        {"mae": (scores, ratio), "dino": (scores[:, ::-1], ratio)}, maj, area
    )
    pts = _by_gid(fig, "pts|")
    assert set(pts) == {"pts|mae|class", "pts|mae|area", "pts|dino|class", "pts|dino|area"}
    np.testing.assert_allclose(pts["pts|mae|class"].get_offsets(), scores)
    fc = pts["pts|mae|class"].get_facecolors()
    assert to_hex(fc[0][:3]) == WORLDCOVER_COLORS[0] and to_hex(fc[3][:3]) == WORLDCOVER_COLORS[7]
    labels = _legend_labels(fig)
    assert {"rome", "chimoio", "unlabelled", "40 Cropland"} <= set(labels)
    out = tmp_path / "emb.png"
    assert (
        _run_plot(
            [
                "embeddings",
                "--encoder",
                f"dino={encoder_path}",
                "--chips-dir",
                str(store_dir),
                "--out",
                str(out),
            ]
        )
        == 0
        and out.exists()
    )


# ----------------------------------------------------------------------- MAE
@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory, stats):
    from sarssl.encoders import export_encoder
    from sarssl.selfsup.pretrain import build_model

    torch.manual_seed(0)
    hp = {
        "model_name": "vit_tiny_patch16_224",
        "patch_size": P,
        "embed_dim": 24,
        "depth": 2,
        "num_heads": 2,
        "mask_ratio": 0.75,
        "decoder_dim": 16,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "norm_pix_loss": False,
    }
    model = build_model("mae", hp, S)[0]
    d = tmp_path_factory.mktemp("mae")
    torch.save(
        {"method": "mae", "hparams": hp, "model": model.state_dict(), "step": 1},
        d / "checkpoint.pt",
    )
    export_encoder(
        model.encoder,
        d / "encoder.safetensors",
        model_name="vit_tiny_patch16_224",
        model_kwargs={
            "in_chans": 12,
            "img_size": S,
            "patch_size": P,
            "embed_dim": 24,
            "depth": 2,
            "num_heads": 2,
        },
        method="mae",
        stats=stats,
    )
    return d / "checkpoint.pt", model


def test_mae_reconstruction_mask_and_paste(store_dir, stats, mae_checkpoint, tmp_path):
    from sarssl.data.store import ChipStore, load_stats

    path, original = mae_checkpoint
    model, meta = reconstruction.load_mae(path)
    assert model.grid == (S // P, S // P) and meta["stats"]["mean"] == stats["mean"]
    store = ChipStore(store_dir)
    rows = common.select_rows(store, 2, seed=0)
    x = load_chips(store, rows, arrays=("x",))["x"].float().numpy()
    mean, std = load_stats(stats)
    xn = normalize_batch(x, mean, std)
    rec, mask = reconstruction.reconstruct(model, xn, seed=5)
    rec2, mask2 = reconstruction.reconstruct(original, xn, seed=5)
    np.testing.assert_allclose(rec, rec2, atol=1e-5)  # rebuilt model == saved model
    assert np.array_equal(mask, mask2)
    assert rec.shape == x.shape and mask.shape == (2, S, S)
    assert mask.mean() == pytest.approx(0.75)
    # the mask is constant over each patch
    blocks = mask.reshape(2, S // P, P, S // P, P)
    assert (blocks.all(axis=(2, 4)) | ~blocks.any(axis=(2, 4))).all()
    np.testing.assert_allclose(
        denormalize_batch(xn, mean, std)[np.isfinite(x)], x[np.isfinite(x)], atol=1e-3
    )
    rec_db = denormalize_batch(rec, mean, std)
    fig = reconstruction.reconstruction_figure(x, rec_db, mask, season="fall", mask_ratio=0.75)
    imgs = _by_gid(fig, "")
    inp = common.season_false_colour(x[0], "fall")
    pasted = imgs["pasted|0"].get_array()
    np.testing.assert_allclose(pasted[~mask[0]], inp[~mask[0]])
    np.testing.assert_allclose(
        pasted[mask[0]], common.season_false_colour(rec_db[0], "fall")[mask[0]]
    )
    np.testing.assert_allclose(imgs["masked|1"].get_array()[mask[1]], reconstruction.MASK_GREY)
    assert fig.axes[1].get_title() == "75% masked"
    out = tmp_path / "mae.png"
    assert (
        _run_plot(
            [
                "mae-reconstructions",
                "--checkpoint",
                str(path),
                "--chips-dir",
                str(store_dir),
                "--out",
                str(out),
            ]
        )
        == 0
        and out.exists()
    )
    torch.save({"method": "dino", "model": {}}, tmp_path / "dino.pt")
    with pytest.raises(InputError, match="not an MAE"):
        reconstruction.load_mae(tmp_path / "dino.pt")


# ----------------------------------------------------------------------- preprocessing QA
def _make_product(root, valid_cols: slice = slice(None)):
    """The bundled S1A template shrunk to 64 x 700 px with a synthetic VV measurement
    (two fields of different brightness, exponential speckle; DN 0 outside ``valid_cols``)."""
    import rasterio

    from sarssl.sar.safe import template_path

    n_lines, n_samples = 64, 700
    safe = root / template_path("S1A_chimoio").name
    shutil.copytree(template_path("S1A_chimoio"), safe)
    ann = next((safe / "annotation").glob("s1a-iw-grd-vv-*.xml"))
    ann.write_text(
        ann.read_text()
        .replace("<numberOfSamples>25931<", f"<numberOfSamples>{n_samples}<")
        .replace("<numberOfLines>16854<", f"<numberOfLines>{n_lines}<")
    )
    rng = np.random.default_rng(2)
    amp = np.where(np.arange(n_samples)[None, :] < 350, 120.0, 300.0) * np.ones((n_lines, 1))
    dn = np.clip(amp * np.sqrt(rng.gamma(1.0, 1.0, (n_lines, n_samples))), 1, 65535)
    dn = dn.astype(np.uint16)
    keep = np.zeros(n_samples, bool)
    keep[valid_cols] = True
    dn[:, ~keep] = 0
    (safe / "measurement").mkdir()
    name = "s1a-iw-grd-vv-20210119t031653-20210119t031718-036201-043ed0-001.tiff"
    with rasterio.open(
        safe / "measurement" / name,
        "w",
        driver="GTiff",
        width=n_samples,
        height=n_lines,
        count=1,
        dtype="uint16",
    ) as ds:
        ds.write(dn, 1)
    return safe, dn


@pytest.fixture(scope="module")
def small_product(tmp_path_factory):
    return _make_product(tmp_path_factory.mktemp("prod"))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_default_window_finds_the_valid_data(tmp_path):
    from sarssl.sar.safe import open_product

    safe, dn = _make_product(tmp_path, slice(560, 680))
    c0, r0, w, h = qa.valid_window(open_product(safe), "VV", 40)
    assert (w, h) == (40, 40) and 560 <= c0 and c0 + w <= 680 and 0 <= r0 <= 24
    assert (dn[r0 : r0 + h, c0 : c0 + w] > 0).all()
    with pytest.raises(InputError, match="no valid data"):
        panels, _ = qa.read_panels(str(safe), ["VV"], (0, 0, 50, 50), 0, "sigma0", "none", 7)
        qa.preprocessing_qa(panels)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preprocessing_qa_panels(small_product, tmp_path):
    from sarssl.sar.calibration import calibrate
    from sarssl.sar.safe import open_product
    from sarssl.sar.speckle import estimate_enl

    safe, dn = small_product
    panels, title = qa.read_panels(
        str(safe), ["VV"], (300, 0, 100, 64), 0, "sigma0", "refined_lee", 7
    )
    p = open_product(safe)
    ref = calibrate(
        dn[:, 300:400], p.calibration("VV"), p.noise("VV"), np.arange(64), np.arange(300, 400)
    )
    np.testing.assert_allclose(panels["VV"]["sigma0"], ref)
    np.testing.assert_array_equal(panels["VV"]["dn"], dn[:, 300:400])
    assert estimate_enl(panels["VV"]["filtered"]) > 2 * estimate_enl(panels["VV"]["sigma0"])
    fig = qa.preprocessing_qa(panels, title=title)
    imgs = _by_gid(fig, "")
    np.testing.assert_allclose(imgs["sigma0|VV"].get_array(), 10 * np.log10(ref), rtol=1e-6)
    np.testing.assert_array_equal(imgs["dn|VV"].get_array(), dn[:, 300:400])
    assert "filtered|VV" in imgs
    cbar_labels = {a.get_ylabel() for a in fig.axes}
    assert {"σ⁰ (dB)", "DN (amplitude)"} <= cbar_labels
    assert any(t.startswith("filtered (ENL") for t in _legend_labels(fig))
    # without a speckle filter: two image columns + histogram
    panels2, _ = qa.read_panels(str(safe), ["VV"], None, 50, "sigma0", "none", 7)
    c0 = (700 - 50) // 2  # the default window is centred
    np.testing.assert_array_equal(panels2["VV"]["dn"], dn[7:57, c0 : c0 + 50])
    assert panels2["VV"]["dn"].shape == (50, 50) and "filtered" not in panels2["VV"]
    fig2 = qa.preprocessing_qa(panels2, quantity="gamma0")
    assert (
        "filtered|VV" not in _by_gid(fig2, "") and len(fig2.axes) == 3 + 2
    )  # 3 panels + 2 colour bars
    assert "VV: calibrated γ⁰" in [a.get_title() for a in fig2.axes]
    out = tmp_path / "qa.png"
    assert (
        _run_plot(
            [
                "preprocessing-qa",
                "--product",
                str(safe),
                "--pols",
                "VV",
                "--size",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
        and out.exists()
    )
    assert (
        _run_plot(["preprocessing-qa", "--product", str(safe), "--pols", "HH", "--out", str(out)])
        == 2
    )
    with pytest.raises(SarsslError, match="--window"):
        qa.parse_window("1,2,3")


def test_every_figure_is_registered():
    assert {
        "preprocessing-qa",
        "composites",
        "backscatter-distributions",
        "data-statistics",
        "qualitative",
        "attention",
        "mae-reconstructions",
        "embeddings",
    } <= set(figures_cli.FIGURES)
    parser = argparse.ArgumentParser()
    figures_cli.add_arguments(parser)  # every option parses without clashes


def test_qa_window_is_centred_on_the_area():
    """The preprocessing-QA window centre maps back (through the annotation's GCP grid) to
    the centre of the requested area, and the window lies inside the image."""
    from scipy.interpolate import LinearNDInterpolator

    from sarssl.figures.qa import aoi_window
    from sarssl.sar.safe import open_product, template_path

    safe = template_path("S1B_rome")  # the SAFE folder itself
    c0, r0, w, h = aoi_window(str(safe), "12.46,41.96,12.54,42.04", 400)
    ann = open_product(safe).annotation("VV")
    lines, samples = ann.shape
    assert (w, h) == (400, 400) and 0 <= c0 <= samples - w and 0 <= r0 <= lines - h
    g = ann.gcps()
    to_lonlat = LinearNDInterpolator(
        np.column_stack([g["line"], g["pixel"]]), np.column_stack([g["longitude"], g["latitude"]])
    )
    lon, lat = to_lonlat([[r0 + h / 2, c0 + w / 2]])[0]
    assert abs(lon - 12.50) < 0.005 and abs(lat - 42.00) < 0.005

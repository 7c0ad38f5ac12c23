"""The demo world (issue #15): what docs/demo.md says it is, and the unlabelled area.

* the simulated land cover and sigma0 have the class shares, means and spreads that
  docs/demo.md tabulates, and the mechanisms it describes (parcels, shifted crop calendars,
  forest vs shrub texture and stability, seasonal flooding, thin roads, double bounce);
* an unlabelled area (``labels: false``) gets no label rasters from ``sarssl simulate``,
  an all-ignore, train-only chip store from ``sarssl chips --no-labels``, and is refused
  as a fine-tuning area;
* no pretraining window of the demo configuration lies within one chip of a test band of
  a fine-tuning area.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from conftest import ROOT, run_snakemake
from sarssl.cli import main
from sarssl.demo import backscatter as bs
from sarssl.vocabulary import CHANNELS, IGNORE_INDEX

DOC = ROOT / "docs" / "demo.md"


def _doc_stats() -> dict[tuple[str, int], dict]:
    """(profile, WorldCover code) -> share, VV/VH means per season, VV std (docs/demo.md)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(
            r"\| (mediterranean|savanna) \| (\d+) \w+ \| ([\d.]+) \|(.*)\|(.*)\|(.*)\|", line
        )
        if not m:
            continue
        floats = [[float(v) for v in m.group(i).split(",")] for i in (4, 5)]
        rows[(m.group(1), int(m.group(2)))] = {
            "share": float(m.group(3)),
            "VV": floats[0],
            "VH": floats[1],
            "sd": float(m.group(6)),
        }
    return rows


@pytest.fixture(scope="module", params=bs.PROFILES)
def world(request):
    # another seed and size than the documented table: the statistics must generalise
    return bs.synth_world((900, 1000), 10.0, 11, request.param)


def test_world_statistics_are_what_the_docs_say(world):
    doc = _doc_stats()
    assert len(doc) == 2 * len(bs.CLASSES), "docs/demo.md class table incomplete"
    n = world.classes.size
    for k, c in enumerate(bs.CLASSES):
        ref = doc[(world.profile, c.code)]
        m = world.classes == k
        assert abs(m.sum() / n - ref["share"]) < 0.05, (c.name, m.sum() / n, ref["share"])
        if m.sum() < 500:  # too few cells for stable means (rare water in a small world)
            continue
        tol = 1.0 if ref["share"] >= 0.02 else 1.5  # rare classes: few correlated patches
        for pol in ("VV", "VH"):
            means = [float(world.db[pol][s][m].mean()) for s in range(4)]
            assert np.allclose(means, ref[pol], atol=tol), (c.name, pol, means, ref[pol])
        sd = np.mean([world.db["VV"][s][m].std() for s in range(4)])
        assert abs(sd - ref["sd"]) < 0.6, (c.name, sd, ref["sd"])


def test_world_is_deterministic_and_seeded():
    a = bs.synth_world((200, 220), 10.0, 3, "savanna")
    b = bs.synth_world((200, 220), 10.0, 3, "savanna")
    c = bs.synth_world((200, 220), 10.0, 4, "savanna")
    assert np.array_equal(a.classes, b.classes) and np.array_equal(a.db["VH"], b.db["VH"])
    assert not np.array_equal(a.classes, c.classes)


def test_parcels_exist_with_margins_and_shifted_calendars(world):
    crop = world.classes == bs.CROP
    ids = np.unique(world.parcel[crop])
    assert ids.min() >= 0 and len(ids) > 100
    sizes_ha = np.bincount(world.parcel[crop])[ids] * 0.01
    assert 0.3 < np.median(sizes_ha) < 8.0, np.median(sizes_ha)
    # every crop cell of a parcel shares the parcel's stage in every season but its margin
    cal = np.array(list(bs.crop_calendars(world.profile).values()))
    for s in range(4):
        inner = crop & (world.state[s] != bs.S_MARGIN)
        assert np.array_equal(
            world.state[s][inner], world.parcel_stages[world.parcel[inner], s].astype(np.uint8)
        )
    margin = crop & (world.state[0] == bs.S_MARGIN)
    assert 0.03 < margin.sum() / crop.sum() < 0.4
    # the stages are the crop type's calendar shifted by the parcel's sowing shift
    shift = world.parcel_shift.astype(int)
    for p in ids[:200]:
        expect = np.roll(cal[world.parcel_type[p]], shift[p])
        assert np.array_equal(world.parcel_stages[p], expect)
    assert {-1, 0, 1} <= set(shift[ids].tolist())
    # so parcels of one crop type differ in a season: a crop cell looks like bare soil in
    # some seasons and like a canopy in others, and fallow like grass
    for s in range(4):
        stages = world.state[s][crop & (world.state[s] != bs.S_MARGIN)]
        assert len(np.unique(stages)) >= 3
        assert 0.03 < np.mean(stages == bs.S_C_BARE) < 0.8
    assert np.mean(world.state[1][crop] == bs.S_GRASS) > 0.05  # fallow


def test_forest_and_shrub_differ_more_in_texture_and_stability_than_in_mean(world):
    forest = world.classes == bs.TREE
    shrub = world.classes == bs.SHRUB
    vv = world.db["VV"]
    mean_gap = abs(vv[:, forest].mean() - vv[:, shrub].mean())
    assert mean_gap < 2.0

    def local_sd(img):
        m = ndimage.uniform_filter(img, 3)
        return np.sqrt(np.maximum(ndimage.uniform_filter(img * img, 3) - m * m, 0))

    core_f = ndimage.binary_erosion(forest, iterations=2)
    core_s = ndimage.binary_erosion(shrub, iterations=2)
    tex_f = np.median(local_sd(vv[0])[core_f])
    tex_s = np.median(local_sd(vv[0])[core_s])
    assert tex_f > 1.8 * tex_s, (tex_f, tex_s)
    # seasonal stability: per-cell change between seasons
    swing_f = np.median(np.ptp(vv[:, core_f], axis=0))
    swing_s = np.median(np.ptp(vv[:, core_s], axis=0))
    assert swing_s > swing_f, (swing_f, swing_s)


def test_wetlands_flood_with_the_seasons_and_settlements_have_structure(world):
    wet = world.classes == bs.WETLAND
    flooded = [np.mean(np.isin(world.state[s][wet], [bs.S_WATER, bs.S_FLOODVEG])) for s in range(4)]
    assert flooded[0] > 0.4 and flooded[2] < 0.15  # wet winter, dry summer
    built = world.classes == bs.BUILT
    states = world.state[0][built]
    for s in (bs.S_STREET, bs.S_ROOF, bs.S_FACADE):
        assert np.mean(states == s) > 0.02, bs.STATES[s]
    facade = built & (world.state[0] == bs.S_FACADE)
    street = built & (world.state[0] == bs.S_STREET)
    assert world.db["VV"][0][facade].mean() > world.db["VV"][0][street].mean() + 10
    # streets and roads are thin lines: an erosion removes almost all of them
    assert ndimage.binary_erosion(street).sum() < 0.1 * street.sum()
    # a built-up cell can look like vegetation (gardens): the class is confusable per pixel
    assert np.mean(np.isin(states, [bs.S_GRASS, bs.S_FOREST])) > 0.04


def test_signature_table_csv(tmp_path):
    bs.write_sigma0_table(tmp_path / "t.csv", "mediterranean", None)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert len(lines) == 1 + len(bs.STATES) * 4 * 2
    assert "open_water,mediterranean,summer,VH,-27.50,35.0" in lines


# --------------------------------------------------------------------------------------
# the unlabelled area
# --------------------------------------------------------------------------------------
def test_simulate_no_labels_writes_no_label_rasters(tmp_path):
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "landcover.tif").write_bytes(b"stale")  # from an earlier labelled run
    rc = main(
        [
            "simulate",
            "--template",
            "S1B_rome",
            "--area",
            "pool",
            "--bbox",
            "12.495,41.995,12.505,42.0",
            "--year",
            "2021",
            "--per-season",
            "1",
            "--seed",
            "3",
            "--products-dir",
            str(tmp_path / "products"),
            "--truth-dir",
            str(truth),
            "--no-labels",
        ]
    )
    assert rc == 0
    assert len(list((tmp_path / "products").glob("*.zip"))) == 4
    assert not (truth / "landcover.tif").exists() and not (truth / "treecover.tif").exists()
    assert (truth / "dem.tif").is_file()
    assert json.loads((truth / "run.json").read_text())["config"]["labels"] is False


def test_chips_no_labels_all_ignore_and_train_only(tmp_path):
    from sarssl.data.store import ChipStore
    from sarssl.io import write_geotiff
    from sarssl.sar.grid import area_grid

    grid = area_grid((12.46, 41.96, 12.48, 41.975), 10.0)
    comp = np.random.default_rng(0).normal(-12, 3, size=(12, *grid.shape)).astype(np.float32)
    cpath = tmp_path / "comp.tif"
    write_geotiff(cpath, comp, crs=grid.crs, transform=grid.transform, band_names=list(CHANNELS))
    out = tmp_path / "store"
    args = ["chips", "--composite", str(cpath), "--area", "pool", "--size", "16"]
    assert main([*args, "--no-labels", "--out-dir", str(out)]) == 0
    st = ChipStore(out)
    assert st.n > 10 and set(st.index["split"]) == {"train"}
    assert np.all(np.asarray(st.landcover) == IGNORE_INDEX)
    assert np.all(np.isnan(np.asarray(st.treecover, dtype=np.float32)))
    assert st.meta["labels"] is False
    # labels are required unless --no-labels, and exclude it
    assert main([*args, "--out-dir", str(tmp_path / "x")]) != 0
    assert main([*args, "--no-labels", "--landcover", str(cpath), "--out-dir", "y"]) != 0


def _dry_run(tmp_path, write_config, cfg) -> str:
    res = run_snakemake(tmp_path, write_config(cfg), "--dry-run", "--cores", "1")
    return res.returncode, res.stdout + res.stderr


def test_unlabelled_area_is_refused_as_finetuning_area(tmp_path, demo_config, write_config):
    demo_config["finetune"]["areas"] = ["rome", "sabina"]
    rc, out = _dry_run(tmp_path, write_config, demo_config)
    assert rc != 0 and "finetune.areas[1]" in out and "labels: false" in out


def test_pretraining_area_next_to_a_finetuning_area_is_refused(tmp_path, demo_config, write_config):
    # sabina moved to 300 m east of rome (less than one 640 m chip)
    demo_config["areas"]["sabina"]["bbox"] = [12.544, 41.96, 12.70, 42.10]
    rc, out = _dry_run(tmp_path, write_config, demo_config)
    assert rc != 0 and "areas.sabina.bbox" in out and "less than one chip" in out


def test_unlabelled_directory_area_needs_no_label_rasters(tmp_path, demo_config, write_config):
    """A real-data area with labels: false needs products and a DEM only."""
    (tmp_path / "products").mkdir()
    (tmp_path / "dem.tif").write_bytes(b"")
    demo_config["areas"]["sabina"] = {
        "bbox": demo_config["areas"]["sabina"]["bbox"],
        "source": "directory",
        "products": str(tmp_path / "products"),
        "dem": str(tmp_path / "dem.tif"),
        "labels": False,
    }
    rc, out = _dry_run(tmp_path, write_config, demo_config)
    assert rc == 0, out[-3000:]
    # with labels the rasters are required again (schema)
    demo_config["areas"]["sabina"]["labels"] = True
    rc, out = _dry_run(tmp_path, write_config, demo_config)
    assert rc != 0 and "landcover" in out


def test_demo_dag_routes_the_unlabelled_area(tmp_path, demo_config, write_config):
    rc, out = _dry_run(tmp_path, write_config, demo_config)
    assert rc == 0, out
    assert re.search(r"^simulate_unlabelled\s+1$", out, re.M)
    assert re.search(r"^simulate\s+2$", out, re.M)
    assert re.search(r"^fractions\s+2$", out, re.M)  # label fractions: fine-tuning areas only
    cmds = [line for line in out.splitlines() if line.startswith("Shell command: sarssl simulate")]
    assert len(cmds) == 3
    for cmd in cmds:
        assert ("--area sabina" in cmd) == ("--no-labels" in cmd), cmd
        assert ("--area sabina" in cmd) == ("--per-season 1 " in cmd), cmd
    # no per-class or test-chip figure of the unlabelled area
    for name in ("backscatter_distributions", "attention", "mae_reconstructions"):
        assert f"sabina/{name}" not in out


def test_no_pretraining_window_near_a_test_band(demo_config):
    """Every chip of every pretraining area lies at least one chip (ground distance) from
    every test chip of every fine-tuning area, on the demo's chip grids and split bands."""
    from pyproj import Transformer

    from sarssl.data.chips import chip_grid, split_bands
    from sarssl.sar.grid import area_grid

    cfg = demo_config
    ch = cfg["chips"]
    res = float(cfg.get("preprocess", {}).get("resolution", 10))
    size = int(ch["size"])
    side = size * res

    def chips_of(area, split=None):
        grid = area_grid(tuple(cfg["areas"][area]["bbox"]), res)
        chips = chip_grid(grid, size, int(ch.get("overlap", 0)))
        x = np.array([c.x_left for c in chips]) + side / 2
        y = np.array([c.y_top for c in chips]) - side / 2
        if split is not None:
            _, splits = split_bands(
                x, y, ch["split_angle"], float(ch["split_band_width"]), ch["split_pattern"]
            )
            keep = np.asarray(splits) == split
            x, y = x[keep], y[keep]
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        return np.column_stack(to_ll.transform(x, y))

    pool = list(cfg["pretrain"]["areas"])
    assert pool, "the demo pretrains on some area"
    for p in pool:
        ll_p = chips_of(p)
        for f in cfg["finetune"]["areas"]:
            if f == p:
                # an area both pretrained and fine-tuned on: pretraining leaves out its chips
                # within one chip of its own test chips (tests/test_pretrain_pool.py)
                continue
            ll_t = chips_of(f, "test")
            assert len(ll_t)
            # ground distance between chip centres, minus the chips' half diagonals
            tr = Transformer.from_crs("EPSG:4326", "EPSG:4978", always_xy=True)
            xp = np.column_stack(tr.transform(ll_p[:, 0], ll_p[:, 1], np.zeros(len(ll_p))))
            xt = np.column_stack(tr.transform(ll_t[:, 0], ll_t[:, 1], np.zeros(len(ll_t))))
            d = np.sqrt(((xp[:, None, :] - xt[None, :, :]) ** 2).sum(-1)).min()
            assert d - side * np.sqrt(2) >= side, (p, f, d)
    # the pool is at least 10x the labelled training chips of the in-region area
    n_pool = sum(len(chips_of(p)) for p in pool if p not in cfg["finetune"]["areas"])
    n_train = max(len(chips_of(f, "train")) for f in cfg["finetune"]["areas"])
    assert n_pool >= 10 * n_train, (n_pool, n_train)


def test_truth_rasters_of_a_labelled_area(tmp_path):
    """A labelled simulation writes WorldCover-coded labels from the world (smoke)."""
    rc = main(
        [
            "simulate",
            "--template",
            "S1B_rome",
            "--area",
            "lab",
            "--bbox",
            "12.495,41.995,12.505,42.0",
            "--year",
            "2021",
            "--per-season",
            "1",
            "--seed",
            "3",
            "--products-dir",
            str(tmp_path / "p"),
            "--truth-dir",
            str(tmp_path / "t"),
        ]
    )
    assert rc == 0
    with rasterio.open(Path(tmp_path / "t" / "landcover.tif")) as ds:
        codes = set(np.unique(ds.read(1)).tolist())
    assert codes <= {int(c) for c in bs.CLASS_CODES}


def test_pretraining_curves_figure(tmp_path):
    """Loss panels per run plus DINO's entropy panel; the late change is measured."""
    from sarssl.figures import pretraining

    rng = np.random.default_rng(0)
    for method, extra in (("mae", {}), ("dino", {"head_out_dim": 64})):
        d = tmp_path / method
        d.mkdir()
        steps = np.arange(1, 201)
        loss = 1.0 + np.exp(-steps / 30) + rng.normal(0, 0.01, steps.size)
        rows = [{"step": int(s), "loss": float(v)} for s, v in zip(steps, loss)]
        if method == "dino":
            for r in rows:
                r.update(teacher_entropy=1.0, teacher_marginal_entropy=3.5)
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (d / "run.json").write_text(json.dumps({"config": {"hparams": extra}}))
    runs = {m: pretraining.read_run(tmp_path / m) for m in ("mae", "dino")}
    fig = pretraining.pretraining_curves(runs)
    assert len(fig.axes) == 3
    assert "ln K" in " ".join(t.get_text() for t in fig.axes[2].texts)
    assert abs(pretraining.late_change(runs["mae"][0]["loss"].to_numpy())) < 0.02
    assert pretraining.late_change(np.linspace(2, 1, 100)) < -0.1  # still falling
    out = tmp_path / "fig.png"
    rc = main(["plot", "pretraining-curves", "--run", f"mae={tmp_path / 'mae'}", "--out", str(out)])
    assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(Exception, match="line 1"):
        pretraining.read_run(tmp_path / "bad")

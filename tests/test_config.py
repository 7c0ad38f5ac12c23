"""Configuration schema and parse-time checks of the workflow.

Every invalid config must stop ``snakemake --dry-run`` before any job starts, with a message
that names the offending key or file; valid configs must expand to the expected DAG.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import DEMO_CONFIG, ROOT, TEST_CONFIG, run_snakemake
from sarssl.vocabulary import init_protocols

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def job_counts(stdout: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts = {}
    table = stdout.split("Job stats:", 1)[1]
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


# ---------------------------------------------------------------------------- schema only


def test_demo_and_test_configs_validate():
    for path in (DEMO_CONFIG, TEST_CONFIG):
        cfg = yaml.safe_load(path.read_text())
        validate(cfg, str(SCHEMA))  # raises on any error


def test_defaults_are_filled_in():
    cfg = {
        "areas": {"a": {"bbox": [0, 0, 0.1, 0.1], "source": "simulate", "template": "S1B_rome"}},
        "pretrain": {"areas": ["a"]},
        "finetune": {"areas": ["a"]},
    }
    validate(cfg, str(SCHEMA))
    assert cfg["seed"] == 42
    assert cfg["areas"]["a"]["crs"] == "auto"
    assert cfg["preprocess"]["speckle_filter"] == "refined_lee"
    assert cfg["preprocess"]["calibration"] == "sigma0"
    assert cfg["composite"]["method"] == "mean"
    assert cfg["composite"]["seasons"]["winter"] == ["12-01", "02-end"]
    assert cfg["chips"]["split_pattern"] == ["train", "train", "train", "test", "val"]
    assert cfg["pretrain"]["backbone"]["patch_size"] == 8
    assert cfg["pretrain"]["mae"]["mask_ratio"] == 0.75
    assert cfg["pretrain"]["dino"]["teacher_temp"] == 0.04
    # the study's inits with both controls (U-Net, per-pixel) by default
    assert cfg["finetune"]["inits"] == ["scratch", "mae", "dino", "unet", "pixel"]
    assert cfg["finetune"]["protocols"] == ["finetune", "linear", "knn"]
    assert cfg["finetune"]["layer_decay"] == 0.75 and cfg["finetune"]["lr_search"] == "each_run"
    # the study's matrix by default: 6 label fractions x 3 seeds x every protocol and task
    assert cfg["finetune"]["fractions"] == [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    assert cfg["finetune"]["seeds"] == [0, 1, 2]
    assert cfg["finetune"]["tasks"] == ["landcover", "treecover"]


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c["finetune"].__setitem__("fractions", [0.0, 1.0]), "0.0"),
        (lambda c: c["finetune"].__setitem__("fractions", [1.5]), "1.5"),
        (lambda c: c["finetune"].__setitem__("inits", ["imagenet"]), "imagenet"),
        (lambda c: c["pretrain"].__setitem__("methods", ["simclr"]), "simclr"),
        (lambda c: c["composite"].__setitem__("method", "max"), "max"),
        (lambda c: c["composite"]["seasons"].__setitem__("winter", ["13-01", "02-end"]), "13-01"),
        (lambda c: c["areas"]["rome"].__setitem__("source", "s3"), "s3"),
        (lambda c: c["areas"]["rome"].__setitem__("bbox", [1, 2, 3]), "bbox"),
        (lambda c: c["areas"]["rome"].__setitem__("tempalte", "S1B_rome"), "tempalte"),
        (lambda c: c["catalogue"].__setitem__("orbit_direction", "up"), "up"),
    ],
)
def test_schema_rejects(demo_config, edit, fragment):
    cfg = copy.deepcopy(demo_config)
    edit(cfg)
    with pytest.raises(Exception) as info:
        validate(cfg, str(SCHEMA))
    text = str(info.value)
    if info.value.__cause__ is not None:
        text += str(info.value.__cause__)
    for arg in getattr(info.value, "args", ()):
        text += str(arg)
    assert fragment in text


def test_external_encoder_init_plans_runs(tmp_path, demo_config, write_config):
    encoder = tmp_path / "models" / "ssl4eo" / "encoder.safetensors"
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"")
    demo_config["finetune"]["inits"] = ["scratch", str(encoder)]
    validate(copy.deepcopy(demo_config), str(SCHEMA))
    res = run_snakemake(tmp_path, write_config(demo_config), "--dry-run", "--cores", "1", "-p")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    # one job per task x init x protocol x area (each runs every fraction x seed)
    assert counts["finetune"] == 2 * 2 * 3 * 2  # tasks x inits x protocols x areas
    assert counts["pretrain"] == 2  # pretrain.methods are still targets of rule all
    assert f"--init {encoder} --pretrain-area external" in res.stdout


# ------------------------------------------------------------------- through snakemake -n


def test_demo_config_dry_run_expands_the_study(tmp_path):
    res = run_snakemake(tmp_path, DEMO_CONFIG, "--dry-run", "--cores", "1", "--printshellcmds")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    # one job per task x area x (3 ViT inits x 3 protocols + the U-Net, fine-tuned only,
    # + the per-pixel control, linear only); each runs 2 fractions x 2 seeds
    assert counts["finetune"] == 2 * 2 * (3 * 3 + 1 + 1)
    assert counts["pretrain"] == 2
    # rome, chimoio (labelled) and sabina (the unlabelled pretraining pool)
    assert counts["simulate"] == 2 and counts["simulate_unlabelled"] == 1
    assert counts["catalogue"] == counts["chips"] == 3
    assert counts["fractions"] == 2  # label subsets: fine-tuning areas only
    assert counts["stats"] == counts["tables"] == counts["plot_learning_curves"] == 1
    out = res.stdout
    # season windows of year 2021 -> catalogue dates; filters from config
    assert "--start 2020-12-01 --end 2021-11-30" in out
    assert "--orbit-direction descending" in out
    # scratch runs do not load an encoder; MAE runs do, with the pretraining area recorded
    assert re.search(r"--init scratch --pretrain-area none", out)
    assert re.search(
        r"--init mae --encoder results/pretrain/mae/encoder.safetensors"
        r" --pretrain-area rome\+sabina",
        out,
    )
    assert "results/finetune/treecover/dino/linear/chimoio/f0.05_s0/metrics.json" in out
    assert "results/finetune/landcover/unet/finetune/rome/f0.05_s1/metrics.json" in out
    assert "results/finetune/landcover/pixel/linear/rome/f1.0_s0/metrics.json" in out
    assert "--fraction 0.05,1.0 --seed 0,1" in out
    assert "unet/linear" not in out and "pixel/finetune" not in out
    assert "sarssl fractions" in out and "--seeds 0,1" in out
    # hyper-parameters from config reach the training commands as JSON
    assert '"mask_ratio": 0.75' in out and '"img_size": 64' in out


def test_matrix_config_expands_the_full_default_matrix(tmp_path, demo_config, write_config):
    """config/matrix.yaml over the demo = the schema's default matrix on both areas: 216
    separate jobs per fine-tuning area, each (task, init, protocol, fraction, seed) once."""
    run_re = r"results/finetune/(\w+)/(\w+)/(\w+)/(\w+)/f([\d.]+)_s(\d+)/metrics.json"

    def planned(cfg: dict, name: str) -> tuple[dict, set]:
        res = run_snakemake(
            tmp_path, write_config(cfg, name), "--dry-run", "--cores", "1", "--printshellcmds"
        )
        assert res.returncode == 0, res.stderr + res.stdout
        return job_counts(res.stdout), set(re.findall(run_re, res.stdout))

    matrix = yaml.safe_load((ROOT / "config" / "matrix.yaml").read_text())
    cfg = copy.deepcopy(demo_config)
    cfg["finetune"].update(matrix["finetune"])
    counts, runs = planned(cfg, "matrix.yaml")
    ft = cfg["finetune"]
    pairs = {(i, p) for i in ft["inits"] for p in init_protocols(i, ft["protocols"])}
    assert ("unet", "finetune") in pairs and ("pixel", "linear") in pairs
    assert ("unet", "linear") not in pairs and ("pixel", "finetune") not in pairs
    # every (task, init, protocol, area) x fraction x seed once
    assert len(runs) == 2 * len(pairs) * 6 * 3 * 2
    assert {(r[1], r[2]) for r in runs} == pairs
    assert counts["finetune"] == 2 * len(pairs) * 2  # one job per task x pair x area
    assert {r[0] for r in runs} == {"landcover", "treecover"}
    assert {r[3] for r in runs} == {"rome", "chimoio"}
    assert {r[4] for r in runs} == {"0.01", "0.05", "0.1", "0.25", "0.5", "1.0"}
    assert {r[5] for r in runs} == {"0", "1", "2"}
    # leaving fractions, seeds and protocols to the schema defaults plans the same runs
    for key in ("fractions", "seeds", "protocols"):
        del demo_config["finetune"][key]
    assert planned(demo_config, "defaults.yaml")[1] == runs


def test_custom_seasons_and_filters_reach_the_catalogue(tmp_path, demo_config, write_config):
    demo_config["year"] = 2024
    demo_config["composite"]["seasons"] = {
        "winter": ["11-15", "02-end"],
        "spring": ["03-01", "05-31"],
        "summer": ["06-01", "08-31"],
        "fall": ["09-01", "10-31"],
    }
    demo_config["catalogue"] = {
        "orbit_direction": "any",
        "relative_orbits": [15, 88],
        "polarisations": ["VV"],
    }
    res = run_snakemake(
        tmp_path, write_config(demo_config), "--dry-run", "--cores", "1", "--printshellcmds"
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "--start 2023-11-15 --end 2024-10-31" in res.stdout
    assert "--relative-orbits 15,88" in res.stdout
    assert "--polarisations VV " in res.stdout
    assert "--orbit-direction" not in res.stdout


def _dry_run_fails(tmp_path, cfg_path) -> str:
    res = run_snakemake(tmp_path, cfg_path, "--dry-run", "--cores", "1")
    assert res.returncode != 0, "invalid config was accepted:\n" + res.stdout
    assert "Job stats" not in res.stdout  # stopped before scheduling anything
    return res.stdout + res.stderr


def test_misspelt_key_is_named(tmp_path, demo_config, write_config):
    demo_config["preprocess"]["speckle_filtr"] = demo_config["preprocess"].pop("speckle_filter")
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "'speckle_filtr' was unexpected" in msg


def test_misspelt_top_level_section_is_named(tmp_path, demo_config, write_config):
    demo_config["finetunes"] = demo_config["finetune"]
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "'finetunes' was unexpected" in msg


def test_wrong_type_is_named(tmp_path, demo_config, write_config):
    demo_config["chips"]["size"] = "big"
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "'big' is not of type 'integer'" in msg
    assert "['chips']['size']" in msg


def test_unknown_option_value_is_named(tmp_path, demo_config, write_config):
    demo_config["preprocess"]["speckle_filter"] = "foo"
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "'foo' is not one of" in msg
    assert "['preprocess']['speckle_filter']" in msg


def test_chip_size_must_be_a_multiple_of_the_patch_size(tmp_path, demo_config, write_config):
    demo_config["chips"]["size"] = 60  # patch size 8
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "chips.size" in msg and "patch_size" in msg


def test_unknown_area_in_finetune_is_named(tmp_path, demo_config, write_config):
    demo_config["finetune"]["areas"] = ["rome", "paris"]
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "finetune.areas[1]" in msg and "'paris'" in msg


def _directory_area(tmp_path: Path) -> dict:
    """A `source: directory` area whose every input exists under tmp_path/data."""
    data = tmp_path / "data"
    (data / "products").mkdir(parents=True)
    for name in ("dem.tif", "landcover.tif", "treecover.tif"):
        (data / name).write_bytes(b"")
    return {
        "bbox": [13.46, 42.96, 13.54, 43.04],  # 100 km from the pretraining areas
        "source": "directory",
        "products": str(data / "products"),
        "dem": str(data / "dem.tif"),
        "landcover": str(data / "landcover.tif"),
        "treecover": str(data / "treecover.tif"),
    }


def test_directory_area_with_existing_inputs_plans(tmp_path, demo_config, write_config):
    demo_config["areas"]["real"] = _directory_area(tmp_path)
    demo_config["finetune"]["areas"] = ["real"]
    res = run_snakemake(tmp_path, write_config(demo_config), "--dry-run", "--cores", "1", "-p")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    # only the pretraining areas are simulated: rome (labelled) and sabina (unlabelled)
    assert counts["simulate"] == 1 and counts["simulate_unlabelled"] == 1
    assert f"sarssl catalogue {tmp_path / 'data' / 'products'}" in res.stdout


@pytest.mark.parametrize("key", ["dem", "products", "landcover"])
def test_missing_input_file_stops_the_run(tmp_path, demo_config, write_config, key):
    area = _directory_area(tmp_path)
    missing = tmp_path / "nowhere" / f"missing_{key}"
    area[key] = str(missing)
    demo_config["areas"]["real"] = area
    demo_config["finetune"]["areas"] = ["real"]
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert f"areas.real.{key}" in msg
    assert str(missing) in msg


def test_missing_external_encoder_stops_the_run(tmp_path, demo_config, write_config):
    demo_config["finetune"]["inits"] = ["scratch", "nowhere/encoder.safetensors"]
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "finetune.inits[1]" in msg and "nowhere/encoder.safetensors" in msg


def test_missing_orbit_folder_stops_the_run(tmp_path, demo_config, write_config):
    demo_config["preprocess"]["orbit_dir"] = "nowhere/orbits"
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "preprocess.orbit_dir" in msg and "nowhere/orbits is not a directory" in msg


def test_duplicate_area_name_is_refused(tmp_path, demo_config, write_config):
    """Before: a config naming an area twice silently kept the last one (YAML's rule)."""
    text = write_config(demo_config).read_text()
    rome = text[text.index("  rome:\n") : text.index("  chimoio:\n")]
    dup = tmp_path / "dup.yaml"
    dup.write_text(text.replace("  chimoio:\n", rome + "  chimoio:\n", 1))
    msg = _dry_run_fails(tmp_path, dup)
    assert "dup.yaml" in msg and "duplicate key 'rome'" in msg, msg[-2000:]


@pytest.mark.parametrize(
    "bbox, fragment",
    [
        ([12.52, 41.96, 12.46, 42.04], "west (12.52) must be less than east (12.46)"),
        ([12.46, 42.04, 12.54, 41.96], "south (42.04) must be less than north (41.96)"),
        ([12.46, 41.96, 12.54, 95.0], "latitudes must lie in [-90, 90]"),
    ],
)
def test_bad_bbox_is_named_at_config_time(tmp_path, demo_config, write_config, bbox, fragment):
    """Before: a bbox with W > E failed only inside a job, without naming the area."""
    demo_config["areas"]["chimoio"]["bbox"] = bbox
    msg = _dry_run_fails(tmp_path, write_config(demo_config))
    assert "areas.chimoio.bbox" in msg and fragment in msg, msg[-2000:]

"""Hostile file names and config values never reach the shell as code.

The tiny DAG runs end to end from a working directory, product folder, DEM, label rasters
and an external encoder whose paths hold spaces, both quote characters, ``$(...)``,
back-ticks and ``;``, with a product file named like a command next to the real products.
Before every rule quoted its paths, ``S1B_evil$(touch pwned).zip`` in a product folder ran
``touch`` during ``preprocess``. Every payload here would create a ``PWNED_*`` file (in the
job's working directory, or under the test's folder); the test proves none exists, that
the run succeeded and that the hostile product was rejected by the catalogue with a reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TEST_CONFIG, run_snakemake

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

#: every shell metacharacter that mattered: spaces, quotes, $(...), back-ticks, ';', '&'
HOSTILE = """a b 'q' "dq" $(touch PWNED_dollar) `touch PWNED_tick`; touch PWNED_semi & x"""


def _pwned(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.startswith("PWNED"))


def test_hostile_paths_run_nothing_but_sarssl(tmp_path):
    base = tmp_path / f"t {HOSTILE}"
    work = base / f"work {HOSTILE}"
    inputs = base / f"inputs {HOSTILE}"
    work.mkdir(parents=True)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    rome = cfg["areas"]["rome"]
    products, truth = inputs / f"products {HOSTILE}", inputs / "truth"
    sim = subprocess.run(
        [
            str(Path(sys.executable).with_name("sarssl")),
            "simulate",
            "--template",
            rome["template"],
            "--area",
            "rome",
            "--bbox",
            ",".join(map(str, rome["bbox"])),
            "--year",
            str(cfg["year"]),
            "--per-season",
            "1",
            "--seed",
            "7",
            "--products-dir",
            str(products),
            "--truth-dir",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    assert sim.returncode == 0, sim.stderr[-3000:]
    real = sorted(products.glob("*.zip"))
    assert len(real) == 4
    # a product file named like a command, as anyone with write access to a shared
    # download folder could drop it
    evil = products / "S1B_evil$(touch PWNED_product); touch PWNED_product2.zip"
    shutil.copyfile(real[0], evil)
    dem = inputs / f"dem {HOSTILE}.tif"
    landcover = inputs / f"landcover {HOSTILE}.tif"
    treecover = inputs / f"treecover {HOSTILE}.tif"
    for src, dst in (
        (truth / "dem.tif", dem),
        (truth / "landcover.tif", landcover),
        (truth / "treecover.tif", treecover),
    ):
        shutil.copyfile(src, dst)

    cfg["areas"] = {
        "rome": {
            "bbox": rome["bbox"],
            "crs": "auto",
            "source": "directory",
            "products": str(products),
            "dem": str(dem),
            "landcover": str(landcover),
            "treecover": str(treecover),
        }
    }
    cfg["pretrain"]["areas"] = ["rome"]
    cfg["pretrain"]["methods"] = ["mae"]
    cfg["finetune"].update(
        areas=["rome"], tasks=["landcover"], inits=["scratch", "mae"], fractions=[1.0]
    )
    config = base / f"config {HOSTILE}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = run_snakemake(
        work, config, "--cores", "2", "--set-threads", "pretrain=1", "finetune=1", timeout=900
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    assert _pwned(tmp_path) == [] and _pwned(Path.cwd()) == []

    # the product named like a command was rejected by the catalogue, with the reason
    rejected = pd.read_csv(work / "results/catalogue/rome.rejected.csv")
    assert [Path(p).name for p in rejected["path"]] == [evil.name]
    assert rejected["reason"].str.len().min() > 0
    kept = pd.read_csv(work / "results/catalogue/rome.csv")
    assert len(kept) == 4

    # an external encoder at a hostile path: one more fine-tuning run and the tables
    enc_dir = inputs / f"encoder {HOSTILE}"
    enc_dir.mkdir()
    encoder = enc_dir / f"enc {HOSTILE}.safetensors"
    shutil.copyfile(work / "results/pretrain/mae/encoder.safetensors", encoder)
    shutil.copyfile(work / "results/pretrain/mae/encoder.json", enc_dir / "encoder.json")
    cfg["finetune"]["inits"] = ["scratch", "mae", str(encoder)]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = run_snakemake(work, config, "--cores", "2", "--set-threads", "finetune=1", timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    assert _pwned(tmp_path) == [] and _pwned(Path.cwd()) == []
    runs = list((work / "results/finetune/landcover").glob("file-*/finetune/rome/f1.0_s0/run.json"))
    assert len(runs) == 1
    metrics = pd.read_csv(work / "results/tables/finetune_metrics.csv")
    assert metrics["init"].nunique() == 3
    record = json.loads(runs[0].read_text())
    assert record["config"]["init"] == str(encoder), "the run does not record the encoder it used"

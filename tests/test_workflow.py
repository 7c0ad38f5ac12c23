"""End-to-end: the whole DAG on the tiny config (config/test.yaml), then a no-op re-run.

Runs every stage for real (simulated products -> catalogue -> preprocessing -> composites
-> chips -> stats -> MAE + DINO pretraining -> fine-tuning of 3 inits x 2 tasks x 2
fractions -> tables -> figure) in a temporary working directory on 2 cores.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import yaml

from conftest import TEST_CONFIG, run_snakemake
from sarssl.vocabulary import init_protocols

pytestmark = [pytest.mark.slow, pytest.mark.workflow]


def test_whole_workflow_on_tiny_config(tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    ft = cfg["finetune"]
    start = time.monotonic()
    # one thread per training job: the tiny runs are overhead-bound, two run side by side
    res = run_snakemake(
        tmp_path,
        TEST_CONFIG,
        "--cores",
        "2",
        "--set-threads",
        "pretrain=1",
        "finetune=1",
        timeout=900,
    )
    wall = time.monotonic() - start
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    print(f"tiny workflow: {wall:.0f} s")

    # --- final tables: one row per run and metric, every design cell present
    metrics = pd.read_csv(tmp_path / "results/tables/finetune_metrics.csv")
    runs = metrics[["task", "init", "protocol", "fraction", "seed", "finetune_area"]]
    runs = runs.drop_duplicates()
    # each init under the protocols it runs with: one job per task x init x protocol x
    # area, running every fraction x seed
    n_jobs = (
        len(ft["tasks"])
        * sum(len(init_protocols(i, ft["protocols"])) for i in ft["inits"])
        * len(ft["areas"])
    )
    n_runs = n_jobs * len(ft["fractions"]) * len(ft["seeds"])
    assert len(runs) == n_runs
    assert set(metrics["task"]) == set(ft["tasks"])
    assert set(metrics["init"]) == set(ft["inits"])
    assert sorted(set(metrics["fraction"].round(6))) == sorted(ft["fractions"])
    assert set(metrics["finetune_area"]) == set(ft["areas"])
    assert {"miou", "overall_accuracy", "rmse", "mae", "r2"} <= set(metrics["metric"])
    assert metrics["value"].notna().all()
    pre = metrics.set_index("init")["pretrain_area"]
    assert set(pre.loc[["mae", "dino"]]) == {"+".join(cfg["pretrain"]["areas"])}
    # fewer labels -> fewer training chips
    n_train = metrics.groupby("fraction")["n_train_chips"].max()
    assert n_train.loc[0.5] < n_train.loc[1.0]

    summary = pd.read_csv(tmp_path / "results/tables/finetune_summary.csv")
    assert len(summary) > 0 and {"task", "init", "metric"} <= set(summary.columns)

    png = tmp_path / "results/figures/learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results/figures/learning_curves.pdf").stat().st_size > 0

    # --- every figure (PNG + PDF) for every area/model, the text tables, the report
    areas = [a for a in cfg["areas"]]
    figures = ["data_statistics", "learning_curves", "embeddings", "label_efficiency"]
    for area in areas:
        figures += [
            f"{area}/{n}"
            for n in (
                "preprocessing_qa",
                "composites",
                "backscatter_distributions",
                "mae_reconstructions",
                "attention",
            )
        ]
    figures += [f"{area}/qualitative" for area in ft["areas"]]
    for name in figures:
        png = tmp_path / f"results/figures/{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (tmp_path / f"results/figures/{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    assert "|" in (tmp_path / "results/tables/results.md").read_text()
    assert "\\toprule" in (tmp_path / "results/tables/results.tex").read_text()
    eff = pd.read_csv(tmp_path / "results/tables/label_efficiency.csv")
    assert set(eff["init"]) == {"mae", "dino"}
    rep = run_snakemake(tmp_path, TEST_CONFIG, "--report", "results/report.html", timeout=300)
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-4000:]
    html = (tmp_path / "results/report.html").read_text(errors="replace")
    for name in ("preprocessing_qa.png", "attention.png", "label_efficiency.png"):
        assert name in html, name

    # --- intermediate contracts the workflow wires together
    for method in cfg["pretrain"]["methods"]:
        enc = json.loads((tmp_path / f"results/pretrain/{method}/encoder.json").read_text())
        assert enc["method"] == method
        assert enc["img_size"] == cfg["chips"]["size"]
    stats = json.loads((tmp_path / "results/chips/stats.json").read_text())
    assert len(stats["mean"]) == len(stats["std"]) == 12
    for area in cfg["areas"]:
        catalogue = pd.read_csv(tmp_path / f"results/catalogue/{area}.csv")
        assert len(catalogue) == 4 * cfg["simulate"]["per_season"]  # one per season
        scenes = list((tmp_path / f"results/preprocessed/{area}").glob("*[!k].tif"))
        assert len(scenes) == len(catalogue)

    # --- one log per job, each non-empty where the command logs
    logs = tmp_path / "logs"
    for rule in ("simulate", "catalogue", "preprocess", "composite", "chips"):
        assert len(list((logs / rule).rglob("*.log"))) >= len(cfg["areas"]), rule
    assert len(list((logs / "finetune").rglob("*.log"))) == n_jobs
    assert len(list((logs / "pretrain").glob("*.log"))) == len(cfg["pretrain"]["methods"])
    for name in ("stats/stats.log", "tables/tables.log"):
        assert (logs / name).exists()
    assert len(list((tmp_path / "benchmarks/finetune").rglob("*.tsv"))) == n_jobs

    # --- nothing left to do
    again = run_snakemake(tmp_path, TEST_CONFIG, "--cores", "2", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr

    # --- a new label fraction and seed re-run the subsets and fine-tuning only: never the
    # chips, the statistics or the (GPU-hours) pretraining; old subsets stay as they were
    old_fractions = json.loads(
        (tmp_path / "results/chips" / ft["areas"][0] / "fractions.json").read_text()
    )
    more = dict(cfg, finetune=dict(ft, fractions=[0.25, *ft["fractions"]], seeds=[*ft["seeds"], 7]))
    more_cfg = tmp_path / "more.yaml"
    more_cfg.write_text(yaml.safe_dump(more, sort_keys=False))
    plan = run_snakemake(tmp_path, more_cfg, "--cores", "1", "--dry-run", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr
    rules = {
        line.split()[0]
        for line in plan.stdout.splitlines()
        if line.strip() and line.split()[-1].isdigit()
    }
    assert {"fractions", "finetune", "tables"} <= rules
    assert not rules & {
        "simulate",
        "catalogue",
        "preprocess",
        "composite",
        "chips",
        "stats",
        "pretrain",
    }, rules
    res = run_snakemake(
        tmp_path, more_cfg, "--cores", "1", f"results/chips/{ft['areas'][0]}/fractions.json"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    new_fractions = json.loads(
        (tmp_path / "results/chips" / ft["areas"][0] / "fractions.json").read_text()
    )
    # every seed has its own nested subsets; the old seeds' subsets are unchanged
    assert sorted(new_fractions["per_seed"], key=int) == [str(s) for s in [*ft["seeds"], 7]]
    for seed, table in old_fractions["per_seed"].items():
        assert "0.25" in new_fractions["per_seed"][seed]
        for f, ids in table.items():
            assert new_fractions["per_seed"][seed][f] == ids
    assert new_fractions["per_seed"]["7"]["0.5"] != new_fractions["per_seed"]["0"]["0.5"]

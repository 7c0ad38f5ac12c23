"""The execution profiles plan the study with the right resources.

A complete DAG is needed to see the training jobs (the scenes come from the catalogue
checkpoint), so the tests build the small synthetic study of ``benchmarks/dag.py`` (stand-in
product files and pre-written catalogue CSVs) and dry-run it with each profile, parsing the
per-job ``resources:`` lines Snakemake prints.

* ``workflow/profiles/slurm`` (SLURM executor plugin; the shipped template, not a user's
  edited copy): training jobs go to the GPU partition with ``gpu=1`` (any model) and 8
  threads, which the plugin also requests as CPUs; the other jobs to the CPU partition
  without a GPU; no account. It is used as the workflow profile (replacing
  ``workflow/profiles/default``, whose workstation settings would otherwise override it) or
  as ``--profile`` with ``--workflow-profile none``.
* ``workflow/profiles/default`` (loaded automatically): training jobs ask for ``gpu=1`` of
  the machine's single GPU; nothing else does.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_snakemake
from sarssl.vocabulary import init_protocols

pytestmark = pytest.mark.workflow

SLURM = ROOT / "workflow" / "profiles" / "slurm"


def _load_dag_module():
    spec = importlib.util.spec_from_file_location(
        "sarssl_bench_dag", ROOT / "benchmarks" / "dag.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """A complete small study (2 areas, 6 scenes, one fine-tuning area) ready to dry-run."""
    workdir = tmp_path_factory.mktemp("profiles")
    config = _load_dag_module().build(workdir, n_areas=2, n_scenes=6, n_finetune=1, n_chips=100)
    return workdir, config


def job_resources(stdout: str) -> dict[str, list[dict[str, str]]]:
    """rule name -> list of per-job ``{resource: value}`` (plus ``threads``) of a dry-run."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", stdout):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not head or not res:
            continue
        values = dict(item.split("=", 1) for item in res.group(1).split(", "))
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        values["threads"] = threads.group(1) if threads else "1"
        jobs.setdefault(head.group(1), []).append(values)
    return jobs


def dry_run(workdir: Path, config: Path, *args: str) -> dict[str, list[dict[str, str]]]:
    # no conda on the test machine: the profile's conda deployment is swapped for a
    # method that needs nothing for these rules (the rest of the profile still applies)
    # (--cores 16: a dry-run caps each job's threads at the cores it may use)
    res = run_snakemake(
        workdir,
        config,
        "--dry-run",
        "--cores",
        "16",
        "--sdm",
        "env-modules",
        *args,
        timeout=300,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    jobs = job_resources(res.stdout)
    assert {"preprocess", "pretrain", "finetune", "plot_embeddings"} <= set(jobs), sorted(jobs)
    return jobs


@pytest.mark.parametrize(
    "how",
    [("--workflow-profile", str(SLURM)), ("--profile", str(SLURM), "--workflow-profile", "none")],
    ids=["workflow-profile", "profile"],
)
def test_slurm_profile_gives_training_jobs_a_gpu(study, how):
    workdir, config = study
    jobs = dry_run(workdir, config, *how)
    ft = yaml.safe_load(config.read_text())["finetune"]
    n_finetune = (
        len(ft["tasks"])
        * sum(len(init_protocols(i, ft["protocols"])) for i in ft["inits"])
        * len(ft["areas"])
    )
    assert len(jobs["finetune"]) == n_finetune and len(jobs["pretrain"]) == 2
    for rule in ("pretrain", "finetune"):
        for job in jobs[rule]:
            assert job["gpu"] == "1", (rule, job)
            assert job["slurm_partition"] == "gpu", job
            # any GPU model, no account: nothing site-specific is active as shipped
            assert "gpu_model" not in job and "slurm_account" not in job, job
            # the CPUs SLURM gives (--cpus-per-task = threads) and the torch threads
            # come from one source, set-threads
            assert "cpus_per_task" not in job and job["threads"] == "8", job
    assert jobs["pretrain"][0]["runtime"] == "1440"
    for rule in ("preprocess", "composite", "chips", "plot_composites"):
        for job in jobs[rule]:
            assert "gpu" not in job, (rule, job)
            assert job["slurm_partition"] == "cpu" and "slurm_account" not in job, job
            assert "cpus_per_task" not in job, job
    assert {job["mem_mb"] for job in jobs["preprocess"]} == {"8000"}


def test_slurm_profile_template_is_site_neutral():
    """The shipped template, read as YAML: every set-resources/set-threads rule exists,
    no placeholder account or GPU model is active, no retry doubles a rejected request."""
    profile = yaml.safe_load((SLURM / "config.yaml").read_text())
    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^(?:rule|checkpoint)\s+(\w+):", smk.read_text(), re.M))
    assert set(profile["set-resources"]) | set(profile["set-threads"]) <= rules
    sections = [profile["default-resources"], *profile["set-resources"].values()]
    for section in sections:
        assert not {"slurm_account", "gpu_model", "cpus_per_task"} & set(section), section
    assert profile["retries"] == 0
    assert "slurm-status-command" not in profile  # the plugin's own choice unless set


def test_default_profile_gives_only_training_jobs_the_gpu(study):
    workdir, config = study
    jobs = dry_run(workdir, config)
    for rule, threads in (("pretrain", "4"), ("finetune", "1")):
        assert {job["gpu"] for job in jobs[rule]} == {"1"}, rule
        assert {job["threads"] for job in jobs[rule]} == {threads}, rule
    for rule, rule_jobs in jobs.items():
        if rule not in ("pretrain", "finetune"):
            assert all("gpu" not in job for job in rule_jobs), rule
            assert all("slurm_partition" not in job for job in rule_jobs), rule
    assert {job["mem_mb"] for job in jobs["pretrain"]} == {"16000"}

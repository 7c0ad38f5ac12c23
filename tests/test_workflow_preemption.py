"""Pretraining survives preemption inside the workflow.

Before, the rule asked for no periodic checkpoint and declared ``checkpoint.pt`` as an
output, so Snakemake deleted the SIGTERM checkpoint before the rerun and a killed
pretraining job restarted from step 0 (on a cluster with 12-hour limits it never
finishes). Now resume checkpoints go to ``results/pretrain/METHOD/resume/`` every
``pretrain.checkpoint_every`` steps and on SIGTERM, outside the declared outputs. The test
kills the pretraining job of the tiny DAG with SIGKILL and, separately, with SIGTERM (what
SLURM sends at a time limit), reruns Snakemake, and checks that the job resumed from its
checkpoint and that the final encoder is bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SNAKEFILE, TEST_CONFIG, run_snakemake, snakemake_executable

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

ENCODER = "results/pretrain/mae/encoder.safetensors"


def _pretrain_pids(work: Path) -> list[int]:
    """PIDs of ``sarssl pretrain`` processes whose command line names ``work``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if (
            "pretrain" in words
            and "--resume-dir" in words
            and any(a.endswith("sarssl") for a in words[:2])
        ):
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if Path(cwd) == work.resolve():
                pids.append(int(entry.name))
    return pids


def _start(work: Path, config: Path, *args: str) -> subprocess.Popen:
    cmd = [
        snakemake_executable(),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(work),
        "--cores",
        "1",
        "--rerun-incomplete",
        *args,
        ENCODER,
        "--configfile",
        str(config),
        "--replace-workflow-config",
    ]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _interrupt(work: Path, config: Path, sig: int, *args: str) -> int:
    """Run Snakemake for the encoder and send ``sig`` to the pretraining process once its
    first resume checkpoint exists; returns the step that checkpoint had reached."""
    resume = work / "results/pretrain/mae/resume/checkpoint.pt"
    proc = _start(work, config, *args)
    deadline = time.monotonic() + 600
    try:
        while not resume.exists():
            assert proc.poll() is None, (
                "snakemake ended before a resume checkpoint:\n" + proc.stdout.read()[-4000:]
            )
            assert time.monotonic() < deadline, "no resume checkpoint within 600 s"
            time.sleep(0.05)
        pids = _pretrain_pids(work)
        assert len(pids) == 1, pids
        os.kill(pids[0], sig)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, (
        "the interrupted pretraining job was not reported as failed:\n" + out[-3000:]
    )
    assert not (work / ENCODER).exists()
    assert resume.exists(), "the resume checkpoint did not survive the failed job"
    import torch

    state = torch.load(resume, map_location="cpu", weights_only=True)
    return int(state["step"])


def _finish(work: Path, config: Path) -> dict:
    res = run_snakemake(work, config, "--cores", "1", "--rerun-incomplete", ENCODER, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert not (work / "results/pretrain/mae/resume/checkpoint.pt").exists()
    return json.loads((work / "results/pretrain/mae/run.json").read_text())


def test_killed_and_preempted_pretraining_resume_bit_identically(tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["pretrain"]["methods"] = ["mae"]
    cfg["pretrain"]["mae"]["epochs"] = 60  # a few hundred tiny steps: time to interrupt
    cfg["pretrain"]["checkpoint_every"] = 5
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    # everything up to the pretraining inputs first
    res = run_snakemake(work, config, "--cores", "2", "results/chips/stats.json", timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]

    # SIGKILL: no handler runs; the last periodic checkpoint is the resume point
    step = _interrupt(work, config, signal.SIGKILL)
    run = _finish(work, config)
    total = run["config"]["total_steps"]
    assert 0 < step < total and run["resumed_from_step"] == step, (step, run)
    killed = (work / ENCODER).read_bytes()
    metrics = [
        json.loads(x)
        for x in (work / "results/pretrain/mae/metrics.jsonl").read_text().splitlines()
    ]
    assert metrics[-1]["step"] == total and metrics[0]["step"] <= step, "metrics lost by the kill"

    # SIGTERM (a cluster time limit): checkpoint at the end of the step, exit 143
    step = _interrupt(work, config, signal.SIGTERM, "--forcerun", "pretrain")
    run = _finish(work, config)
    assert 0 < step < total and run["resumed_from_step"] == step, (step, run)
    log = (work / "logs/pretrain/mae.log").read_text()
    assert "resuming from" in log
    terminated = (work / ENCODER).read_bytes()

    # uninterrupted reference
    res = run_snakemake(
        work, config, "--cores", "1", "--forcerun", "pretrain", ENCODER, timeout=600
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    reference = (work / ENCODER).read_bytes()
    assert (
        json.loads((work / "results/pretrain/mae/run.json").read_text())["resumed_from_step"] == 0
    )
    assert killed == reference
    assert terminated == reference

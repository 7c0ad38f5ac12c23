"""``sarssl.slurm_check``: requests of the SLURM profile that no partition can satisfy.

The partitions are recorded ``sinfo --noheader --format='%P|%c|%m|%l|%G'`` outputs: a
one-node cluster without GPUs (the Debian single-node set-up of issue #17), a cluster
whose GPU partition has typed GRES (``gpu:a100:4(S:0-1)``) and a generous one. Requests
come from the shipped profile template and from a real dry-run of the workflow through it.

With ``SARSSL_TEST_SLURM=1`` (root, Debian's slurmctld/slurmd/munge installed), the last
test starts a real single-node SLURM on this machine and runs the tiny DAG's first stages
through ``sbatch`` with a user's copy of the profile.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TEST_CONFIG, run_snakemake
from sarssl.errors import InputError
from sarssl.slurm_check import (
    SINFO_FORMAT,
    check,
    dry_run_requests,
    parse_gres,
    parse_sinfo,
    parse_time_min,
    profile_requests,
)

SLURM = ROOT / "workflow" / "profiles" / "slurm"

# one node, 4 CPUs, ~15 GB, no GPU: what `sinfo` printed on the single-node test cluster
ONE_NODE = "debug*|4|15000|infinite|(null)\n"
# a typical site: CPU nodes, and GPU nodes whose GRES name their model
SITE = (
    "cpu*|64|256000|2-00:00:00|(null)\n"
    "gpu|32|512000|1-00:00:00|gpu:a100:4(S:0-1)\n"
    "gpu|16|128000|1-00:00:00|gpu:v100:2\n"
)
BIG = "cpu*|128|1000000|7-00:00:00|(null)\ngpu|128|1000000|7-00:00:00|gpu:h100:8\n"


def test_parsers():
    assert parse_time_min("infinite") == float("inf")
    assert parse_time_min("1-00:00:00") == 1440
    assert parse_time_min("2-12") == 2 * 1440 + 12 * 60
    assert parse_time_min("2:30:00") == 150
    assert parse_time_min("30:00") == 30  # MM:SS
    assert parse_time_min("45") == 45
    with pytest.raises(InputError, match="unreadable SLURM time"):
        parse_time_min("soon")
    assert parse_gres("gpu:a100:4(S:0-1),gpu:v100:2,shard:8") == {
        ("gpu", "a100"): 4,
        ("gpu", "v100"): 2,
        ("shard", ""): 8,
    }
    assert parse_gres("(null)") == {} and parse_gres("gpu:2") == {("gpu", ""): 2}
    groups = parse_sinfo(SITE)
    assert [g.partition for g in groups] == ["cpu", "gpu", "gpu"]
    assert groups[0].default and not groups[1].default
    assert groups[1].cpus == 32 and groups[1].mem_mb == 512000 and groups[1].time_min == 1440
    with pytest.raises(InputError, match="5 '\\|'-separated"):
        parse_sinfo("cpu 4 15000\n", "rec.txt")


def test_shipped_profile_requests():
    """Threads are the CPUs (one source), no account, any GPU model."""
    reqs = {r.rule: r for r in profile_requests(SLURM)}
    assert reqs["pretrain"].cpus == 8 and reqs["pretrain"].gpus == 1
    assert reqs["pretrain"].gpu_model is None and reqs["pretrain"].partition == "gpu"
    assert reqs["pretrain"].runtime_min == 1440 and reqs["pretrain"].mem_mb == 64000
    assert reqs["(other rules)"].cpus == 1 and reqs["(other rules)"].partition == "cpu"
    assert reqs["preprocess"].mem_mb == 8000 and reqs["preprocess"].gpus == 0


def test_one_node_cluster_lists_every_unsatisfiable_request(tmp_path):
    groups = parse_sinfo(ONE_NODE)
    # the shipped partitions do not exist there
    lines = check(profile_requests(SLURM), groups)
    assert "pretrain: partition 'gpu' does not exist (sinfo lists debug)" in lines
    assert any(line.startswith("(other rules): partition 'cpu'") for line in lines)
    # a user's copy pointing everything at the node's partition: the node is too small
    doc = yaml.safe_load((SLURM / "config.yaml").read_text())
    doc["default-resources"]["slurm_partition"] = "debug"
    for res in doc["set-resources"].values():
        res.pop("slurm_partition", None)
    copy = tmp_path / "slurm"
    copy.mkdir()
    (copy / "config.yaml").write_text(yaml.safe_dump(doc))
    lines = check(profile_requests(copy), groups)
    assert "pretrain: asks 8 CPUs, partition 'debug' offers at most 4" in lines
    assert "pretrain: asks 64000 MB memory, partition 'debug' offers at most 15000" in lines
    assert "pretrain: asks 1 GPUs, partition 'debug' offers at most 0" in lines
    assert "finetune: asks 32000 MB memory, partition 'debug' offers at most 15000" in lines
    assert not [x for x in lines if x.startswith(("preprocess", "chips", "(other rules)"))]
    # shrunk to fit (what the user had to edit), nothing is left
    for rule in ("pretrain", "finetune"):
        doc["set-resources"][rule] = {"mem_mb": 8000, "runtime": 60}
        doc["set-threads"][rule] = 2
    (copy / "config.yaml").write_text(yaml.safe_dump(doc))
    assert check(profile_requests(copy), groups) == []


def test_gpu_model_and_gres_must_exist_in_the_partition():
    groups = parse_sinfo(SITE)
    assert check(profile_requests(SLURM), groups) == []  # any model: the a100 nodes fit
    reqs = profile_requests(SLURM)
    for r in reqs:
        if r.rule == "pretrain":
            r.gpu_model = "h100"
        if r.rule == "finetune":
            r.gpus, r.gres = 0, "gpu:v100:4"
    lines = check(reqs, groups)
    assert lines == [
        "finetune: asks 4 GRES 'gpu:v100:4', partition 'gpu' offers at most 2",
        "pretrain: asks 1 GPUs of model 'h100', partition 'gpu' offers at most 0",
    ]
    # 5 GPUs of any model: 4 + 2 exist, but on different nodes
    reqs[-1].gpu_model, reqs[-1].gpus = None, 5
    assert check([reqs[-1]], groups) == ["pretrain: asks 5 GPUs, partition 'gpu' offers at most 4"]


def test_cli_with_recorded_sinfo(tmp_path):
    rec = tmp_path / "sinfo.txt"
    rec.write_text(ONE_NODE)
    cmd = [sys.executable, "-m", "sarssl.slurm_check", "--profile", str(SLURM)]
    res = subprocess.run([*cmd, "--sinfo", str(rec)], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert "pretrain: partition 'gpu' does not exist" in res.stdout
    assert "request(s) no partition can satisfy" in res.stdout
    rec.write_text(BIG)
    res = subprocess.run([*cmd, "--sinfo", str(rec)], capture_output=True, text=True)
    assert res.returncode == 0 and "fit a partition" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([*cmd, "--sinfo", str(tmp_path / "none.txt")], capture_output=True)
    assert res.returncode == 2 and b"none.txt: sinfo output not found" in res.stderr


@pytest.mark.workflow
def test_dry_run_requests_of_the_tiny_workflow(tmp_path):
    """The real jobs of the tiny DAG through the shipped profile (a dry-run; no conda here,
    so --sdm env-modules stands in for the profile's conda)."""
    res = run_snakemake(
        tmp_path,
        TEST_CONFIG,
        "--dry-run",
        "--cores",  # a dry-run caps each job's threads at --cores; a SLURM run does not
        "1000",
        "--workflow-profile",
        str(SLURM),
        "--sdm",
        "env-modules",
        timeout=300,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    reqs = dry_run_requests(res.stdout)
    rules = {r.rule for r in reqs}
    assert {"simulate", "catalogue"} <= rules, rules
    by_rule = {r.rule: r for r in reqs}
    assert by_rule["pretrain"].cpus == 8 and by_rule["pretrain"].gpus == 1
    assert by_rule["chips"].mem_mb == 8000 and by_rule["chips"].partition == "cpu"
    assert all(r.gpus == 0 for r in reqs if r.rule not in ("pretrain", "finetune"))
    lines = check(reqs, parse_sinfo(ONE_NODE))
    assert "pretrain: partition 'gpu' does not exist (sinfo lists debug)" in lines
    assert "simulate: partition 'cpu' does not exist (sinfo lists debug)" in lines
    assert check(reqs, parse_sinfo(SITE)) == []


# ---------------------------------------------------------------------------------------
# a real single-node SLURM on localhost (opt-in: SARSSL_TEST_SLURM=1)
# ---------------------------------------------------------------------------------------
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue")


def _daemon_pid(pid_file: Path) -> int:
    """The pid a daemon writes once it has forked into the background."""
    for _ in range(100):
        if pid_file.is_file() and pid_file.read_text().strip():
            return int(pid_file.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{pid_file}: not written")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_slurm(tmp_path):
    """Debian's slurmctld + slurmd (+ munged) started on this machine for one test.

    Opt-in (SARSSL_TEST_SLURM=1; `apt-get install slurmctld slurmd slurm-client munge`,
    root): it writes /etc/slurm/slurm.conf, where the jobs' nested `srun` looks (the
    executor plugin's job step drops SLURM_CONF), so it refuses to run where one exists.
    Every daemon it started is stopped by its pid and the file removed afterwards.
    """
    if os.environ.get("SARSSL_TEST_SLURM") != "1":
        pytest.skip("set SARSSL_TEST_SLURM=1 to start a local SLURM")
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and SLURM installed (missing: {missing})")
    if SLURM_CONF.exists() or SLURM_CONF.is_symlink():
        pytest.skip(f"{SLURM_CONF} exists: a SLURM is configured on this machine already")
    host = socket.gethostname().split(".")[0]
    root = tmp_path / "slurm"
    for sub in ("ctld", "d", "run", "log"):
        (root / sub).mkdir(parents=True)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(
        f"ClusterName=sarssltest\nSlurmctldHost={host}\n"
        f"SlurmctldPort={_free_port()}\nSlurmdPort={_free_port()}\n"
        "AuthType=auth/munge\nCredType=cred/munge\nProctrackType=proctrack/linuxproc\n"
        "TaskPlugin=task/none\nSelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_Core_Memory\nSlurmUser=root\nReturnToService=2\n"
        "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
        "MpiDefault=none\nMinJobAge=600\n"
        f"SlurmctldPidFile={root}/run/ctld.pid\nSlurmdPidFile={root}/run/d.pid\n"
        f"StateSaveLocation={root}/ctld\nSlurmdSpoolDir={root}/d\n"
        f"SlurmctldLogFile={root}/log/ctld.log\nSlurmdLogFile={root}/log/d.log\n"
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN\n"
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
    )
    pids = []
    try:
        munge_ok = subprocess.run("munge -n | unmunge", shell=True, capture_output=True)
        if munge_ok.returncode != 0:
            Path("/run/munge").mkdir(exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
            pids.append(_daemon_pid(Path("/run/munge/munged.pid")))
        subprocess.run(["slurmctld", "-i"], check=True)
        pids.append(_daemon_pid(root / "run" / "ctld.pid"))
        subprocess.run(["slurmd"], check=True)
        pids.append(_daemon_pid(root / "run" / "d.pid"))
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                break
            time.sleep(1)
        else:
            logs = "\n".join(p.read_text()[-2000:] for p in sorted((root / "log").iterdir()))
            pytest.fail(f"local SLURM did not come up:\n{logs}")
        yield host
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        SLURM_CONF.unlink(missing_ok=True)


@pytest.mark.slow
def test_tiny_workflow_through_a_local_slurm(local_slurm, tmp_path):
    """First contact with a one-node cluster: the check lists what the template asks that
    the node cannot give (before sbatch would reject it), a copy with the user's edits
    passes it, and the tiny DAG's first stages run through sbatch to the catalogues."""
    recorded = subprocess.run(
        ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"], capture_output=True, text=True
    ).stdout
    lines = check(profile_requests(SLURM), parse_sinfo(recorded))
    assert "pretrain: partition 'gpu' does not exist (sinfo lists debug)" in lines
    gpu = subprocess.run(["sbatch", "--gpus=1", "--wrap", "true"], capture_output=True, text=True)
    assert gpu.returncode != 0 and "Invalid generic resource" in gpu.stderr
    # the user's copy: the node's partition, no GPU, what one node holds, squeue status
    doc = yaml.safe_load((SLURM / "config.yaml").read_text())
    doc.pop("software-deployment-method")  # no conda here: the venv's sarssl
    doc["slurm-status-command"] = "squeue"  # no accounting on this cluster
    doc["default-resources"]["slurm_partition"] = "debug"
    doc["default-resources"]["mem_mb"] = 1000
    doc["set-resources"] = {r: {"mem_mb": 1000, "runtime": 60} for r in doc["set-resources"]}
    doc["set-threads"] = {r: 1 for r in doc["set-threads"]}
    copy = tmp_path / "profile"
    copy.mkdir()
    (copy / "config.yaml").write_text(yaml.safe_dump(doc))
    assert check(profile_requests(copy), parse_sinfo(recorded)) == []
    work = tmp_path / "work"
    work.mkdir()
    res = run_snakemake(
        work, TEST_CONFIG, "--workflow-profile", str(copy), "--until", "catalogue", timeout=900
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert len(re.findall(r"has been submitted with SLURM jobid", res.stdout + res.stderr)) == 4
    for area in yaml.safe_load(TEST_CONFIG.read_text())["areas"]:
        assert (work / "results" / "catalogue" / f"{area}.csv").is_file()
    assert list((work / ".snakemake" / "slurm_logs").rglob("*.log")) == []  # kept on failure only

"""Checkpoints: plain tensors only (no code runs on load), resume across a separate
``--resume-dir`` that survives Snakemake deleting the declared outputs, and preemption."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BACKBONE, MAE_HP, cfg, losses, make_store
from sarssl.engine import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from sarssl.errors import InputError, SarsslError
from sarssl.selfsup.pretrain import train

DINO = {
    "head_hidden_dim": 16,
    "head_bottleneck_dim": 8,
    "head_out_dim": 32,
    "batch_size": 8,
    "epochs": 2,
    "lr": 1e-3,
    "local_crops": 2,
}
DINO_HP = {"backbone": BACKBONE, "dino": DINO}
HP = {"mae": MAE_HP, "dino": DINO_HP}
#: the outputs the workflow's pretrain rule declares: Snakemake deletes them before a rerun
DECLARED = ("encoder.safetensors", "encoder.json", "checkpoint.pt", "metrics.jsonl", "run.json")
REFUSED = "not a plain-tensor checkpoint: refusing to unpickle"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s, stats = make_store(tmp_path_factory.mktemp("chips"))
    return s.resolve(), stats.resolve()  # as config_from_args records them


class Planted:
    """Unpickling this object creates ``marker`` (what an attacker's payload would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_payload(path: Path, marker: Path, kind: str) -> None:
    payload = {
        "step": 1,
        "fingerprint": "x",
        "method": "mae",
        "hparams": {},
        "model": {},
        "x": Planted(marker),
    }
    if kind == "torch":
        torch.save(payload, path)  # torch's zip format with a pickled payload
    else:
        with open(path, "wb") as fh:  # a bare pickle (torch's legacy format)
            pickle.dump(payload, fh)


def plant(path: Path, marker: Path, kind: str) -> Path:
    """Write a malicious checkpoint at ``path`` whose payload would create ``marker``,
    after checking on a twin that the payload is live (an unrestricted load runs it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    twin, fired = path.with_name("twin.pt"), marker.with_name("twin-fired")
    _write_payload(twin, fired, kind)
    with contextlib.suppress(Exception):
        torch.load(twin, weights_only=False)  # what engine.load_checkpoint used to do
    assert fired.exists()
    twin.unlink(), fired.unlink()
    _write_payload(path, marker, kind)
    return path


def clear_declared(out: Path) -> None:
    for name in DECLARED:
        (out / name).unlink(missing_ok=True)


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


# --------------------------------------------------------------------------------------
# 1. plain-tensor checkpoints
# --------------------------------------------------------------------------------------
def _leaves(obj, where="state"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            yield from _leaves(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{where}[{i}]")
    else:
        yield where, obj


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_checkpoints_hold_only_tensors_and_plain_metadata(store, tmp_path, method):
    """The resume and the final checkpoint load with ``weights_only=True`` and hold only
    tensors, str, int, float, bool and None (no NumPy arrays, no custom classes)."""
    chips, stats = store
    out = tmp_path / "out"
    c = cfg(chips, stats, out, method=method, hp=HP[method], max_steps=4)
    assert train({**c, "stop_after_steps": 2}) == 0
    for step in (2, 4):
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["step"] == step
        for where, leaf in _leaves(state):
            plain = leaf is None or isinstance(leaf, (torch.Tensor, str, int, float, bool))
            assert plain, (where, type(leaf))
        assert load_checkpoint(out / "checkpoint.pt")["step"] == step
        if step == 2:
            assert train(c) == 0


def test_rng_state_roundtrip_through_a_weights_only_file(tmp_path):
    """Python, NumPy and torch global RNG states survive save -> weights_only load -> restore."""
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.random(), np.random.standard_normal(), torch.rand(3)  # mid-stream, a cached gaussian
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state()})

    def draw():
        return random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()

    expected = draw()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    restore_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert draw() == expected


def test_saving_a_non_plain_object_fails_at_save_time(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\['when'\].*ndarray"):
        save_checkpoint(tmp_path / "c.pt", {"step": 1, "extra": {"when": np.zeros(2)}})
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("kind", ["torch", "pickle"])
@pytest.mark.parametrize("where", ["out_dir", "resume_dir"])
def test_planted_checkpoint_is_refused_on_resume(store, tmp_path, kind, where):
    """A malicious checkpoint where a resume looks is refused, naming the file, and its
    payload never runs (the marker file is not created)."""
    chips, stats = store
    out, resume, marker = tmp_path / "out", tmp_path / "resume", tmp_path / "PWNED"
    kw = {"resume_dir": str(resume)} if where == "resume_dir" else {}
    path = plant((resume if where == "resume_dir" else out) / "checkpoint.pt", marker, kind)
    with pytest.raises(SarsslError, match=REFUSED) as e:
        train(cfg(chips, stats, out, max_steps=2, **kw))
    assert str(path) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_planted_checkpoint_is_refused_by_the_mae_figure(tmp_path, kind):
    from sarssl.figures import reconstruction

    marker = tmp_path / "PWNED"
    path = plant(tmp_path / "mae" / "checkpoint.pt", marker, kind)
    with pytest.raises(InputError, match=REFUSED) as e:
        reconstruction.load_mae(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# 3. --resume-dir: a resume checkpoint outside the declared outputs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mae", "dino"])
def test_resume_dir_survives_deleted_outputs_bit_identically(store, tmp_path, method):
    """Killed at step 5 (periodic checkpoints every 2 steps), the declared outputs deleted
    as Snakemake does, rerun (with another --checkpoint-every): the encoder file is
    byte-identical to an uninterrupted run's, metrics.jsonl reads as one run, run.json says
    resumed_from_step 5, the final checkpoint is in out-dir and the resume one is gone."""
    chips, stats = store
    hp, steps = HP[method], 8
    full, out, resume = tmp_path / "full", tmp_path / "out", tmp_path / "resume"
    assert train(cfg(chips, stats, full, method=method, hp=hp, max_steps=steps)) == 0
    c = cfg(chips, stats, out, method=method, hp=hp, max_steps=steps, resume_dir=str(resume))
    assert train({**c, "checkpoint_every": 2, "stop_after_steps": 5}) == 0
    assert not (out / "checkpoint.pt").exists() and not (out / "encoder.safetensors").exists()
    assert load_checkpoint(resume / "checkpoint.pt")["step"] == 5
    clear_declared(out)
    assert train({**c, "checkpoint_every": 3}) == 0
    assert sha(out / "encoder.safetensors") == sha(full / "encoder.safetensors")
    assert run_json(out)["resumed_from_step"] == 5
    assert run_json(out)["fingerprint"] == run_json(full)["fingerprint"]
    assert losses(out) == losses(full)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == steps  # full state, for the figure
    assert not (resume / "checkpoint.pt").exists()


def test_resume_dir_with_another_configuration_restarts_with_a_warning(store, tmp_path, caplog):
    """Under the workflow a changed configuration must retrain: with a separate resume-dir a
    foreign checkpoint is ignored (warning, step 0); in out-dir it is still an error."""
    chips, stats = store
    other = {**MAE_HP, "mae": {**MAE_HP["mae"], "lr": 1e-3}}
    ref, out, resume = tmp_path / "ref", tmp_path / "out", tmp_path / "resume"
    assert train(cfg(chips, stats, ref, hp=other, max_steps=6)) == 0
    c = cfg(chips, stats, out, max_steps=6, resume_dir=str(resume))
    assert train({**c, "stop_after_steps": 3}) == 0
    with caplog.at_level(logging.WARNING, logger="sarssl.selfsup.pretrain"):
        assert train(cfg(chips, stats, out, hp=other, max_steps=6, resume_dir=str(resume))) == 0
    assert "different configuration" in caplog.text
    assert str(resume / "checkpoint.pt") in caplog.text
    assert run_json(out)["resumed_from_step"] == 0
    assert sha(out / "encoder.safetensors") == sha(ref / "encoder.safetensors")
    assert losses(out) == losses(ref)
    # resume-dir == out-dir (the default): the old error
    assert train(cfg(chips, stats, tmp_path / "same", max_steps=6, stop_after_steps=3)) == 0
    same = cfg(chips, stats, tmp_path / "same", hp=other, max_steps=6)
    with pytest.raises(SarsslError, match="different run"):
        train({**same, "resume_dir": str(tmp_path / "same")})


SLOW_CLI = (
    "import sys, time\n"
    "import sarssl.selfsup.method as m\n"
    "real = m.step_generator\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.1)\n"
    "    return real(*a, **k)\n"
    "m.step_generator = slow\n"
    "from sarssl.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_sigterm_checkpoints_into_resume_dir_and_resumes_exactly(store, tmp_path):
    """``sarssl pretrain --resume-dir`` killed by SIGTERM mid-training (each step slowed
    down by 0.1 s, numerics untouched) exits 143 with its checkpoint in resume-dir; after
    the declared outputs are deleted, the rerun ends with the uninterrupted run's bytes."""
    chips, stats = store
    steps = 40
    full, out, resume = tmp_path / "full", tmp_path / "out", tmp_path / "resume"
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps(MAE_HP))
    cmd = [
        sys.executable,
        "-c",
        SLOW_CLI,
        "pretrain",
        "--method",
        "mae",
        "--chips-dir",
        str(chips),
        "--stats",
        str(stats),
        "--hparams",
        str(hp_file),
        "--seed",
        "7",
        "--out-dir",
        str(out),
        "--resume-dir",
        str(resume),
        "--device",
        "cpu",
        "--max-steps",
        str(steps),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    k = load_checkpoint(resume / "checkpoint.pt")["step"]
    assert 3 <= k < steps, k
    assert not (out / "checkpoint.pt").exists() and not (out / "encoder.safetensors").exists()
    clear_declared(out)
    assert train(cfg(chips, stats, full, max_steps=steps)) == 0
    assert train(cfg(chips, stats, out, max_steps=steps, resume_dir=str(resume))) == 0
    assert run_json(out)["resumed_from_step"] == k
    assert sha(out / "encoder.safetensors") == sha(full / "encoder.safetensors")
    assert not (resume / "checkpoint.pt").exists()

"""Shared fixtures: the repository root and a helper that runs Snakemake in a subprocess.

Workflow tests run ``snakemake`` exactly as a user would (the venv's executable, the
repository's ``workflow/Snakefile``), in a temporary working directory, so they never touch
``results/`` of the checkout and can run in parallel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
DEMO_CONFIG = ROOT / "config" / "config.yaml"
TEST_CONFIG = ROOT / "config" / "test.yaml"


def snakemake_executable() -> str:
    """The ``snakemake`` next to the running Python (the project venv), else on PATH."""
    candidate = Path(sys.executable).with_name("snakemake")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed")
    return found


def run_snakemake(
    workdir: Path, config: Path | None, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's workflow in ``workdir`` and capture its output.

    ``config`` replaces the workflow's default config entirely (``--configfile`` +
    ``--replace-workflow-config``), so nothing of config/config.yaml leaks into a test.
    The venv's ``bin`` is put first on PATH so that jobs find its ``sarssl``.
    """
    cmd = [
        snakemake_executable(),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *args,
    ]
    if config is not None:
        cmd += ["--configfile", str(config), "--replace-workflow-config"]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------------------------------
# the real Sentinel-1 annotations of ../shared/data/sentinel1
# ---------------------------------------------------------------------------------------
SENTINEL1 = ROOT / ".." / "shared" / "data" / "sentinel1"


def real_annotations() -> dict:
    """One VV product annotation (lxml root) per real product of the shared data, keyed
    ``s1a-iw-g0210119t031653-`` style (the VH annotations share their geometry)."""
    import zipfile

    from lxml import etree

    roots = {}
    for f in sorted(SENTINEL1.glob("*.SAFE/annotation/s1*-vv-*.xml")):
        roots[f.name[:8] + f.name[15:30]] = etree.parse(str(f)).getroot()
    for z in sorted(SENTINEL1.glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            for n in zf.namelist():
                if "/annotation/s1" in n and "-vv-" in n and n.endswith(".xml"):
                    roots[Path(n).name[:8] + Path(n).name[15:30]] = etree.fromstring(zf.read(n))
    return roots


def write_eof(path: Path, sv, kind: str, shift_m: float = 0.0) -> None:
    """An ESA EOF orbit file (AUX_POEORB / AUX_RESORB, the real XML layout) holding the
    state vectors ``sv`` (:class:`sarssl.sar.geometry.StateVectors`), x shifted by
    ``shift_m`` metres."""
    import numpy as np

    osvs = []
    for t, p, v in zip(sv.time, sv.position, sv.velocity):
        ts = str(np.datetime64(t, "us"))
        osvs.append(
            f"<OSV><TAI>TAI={ts}</TAI><UTC>UTC={ts}</UTC><UT1>UT1={ts}</UT1>"
            "<Absolute_Orbit>+1</Absolute_Orbit>"
            f"<X unit='m'>{p[0] + shift_m}</X><Y unit='m'>{p[1]}</Y><Z unit='m'>{p[2]}</Z>"
            f"<VX unit='m/s'>{v[0]}</VX><VY unit='m/s'>{v[1]}</VY><VZ unit='m/s'>{v[2]}</VZ>"
            "<Quality>NOMINAL</Quality></OSV>"
        )
    path.write_text(
        "<Earth_Explorer_File><Earth_Explorer_Header><Fixed_Header>"
        f"<File_Type>AUX_{kind}</File_Type></Fixed_Header></Earth_Explorer_Header>"
        f"<Data_Block type='xml'><List_of_OSVs count='{len(osvs)}'>"
        + "".join(osvs)
        + "</List_of_OSVs></Data_Block></Earth_Explorer_File>"
    )


@pytest.fixture
def demo_config() -> dict:
    """A fresh copy of the demo configuration (config/config.yaml) as a dict."""
    return yaml.safe_load(DEMO_CONFIG.read_text())


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict to ``tmp_path/config.yaml`` and return its path."""

    def _write(cfg: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return _write


# ---------------------------------------------------------------------------------------
# a tiny chip store and pretraining configuration (pretraining, checkpoints, fine-tuning)
# ---------------------------------------------------------------------------------------
BACKBONE = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}
MAE_HP = {
    "backbone": BACKBONE,
    "mae": {
        "decoder_dim": 16,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "epochs": 50,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_epochs": 1,
    },
}


def make_store(root, n=40, s=16, seed=0, noise=0.3):
    """Tiny chip store whose images are blocky class patterns (learnable structure), with
    label fractions 0.25 and 1.0 and its stats.json; returns (store dir, stats path)."""
    import numpy as np

    from sarssl.data.store import write_store
    from sarssl.vocabulary import CHANNELS

    rng = np.random.default_rng(seed)
    cls_mean = rng.normal(-12, 4, size=(11, 12))
    coarse = rng.integers(
        0, 4, size=(n, 1, 1)
    )  # one class per chip: visible patches predict masked ones
    lc = np.kron(coarse, np.ones((1, s, s), np.int64)).astype(np.uint8)
    x = cls_mean[lc].transpose(0, 3, 1, 2) + rng.normal(0, noise, size=(n, 12, s, s))
    tc = np.where(lc == 0, 80.0, 5.0) + rng.uniform(0, 5, size=lc.shape)
    store = write_store(
        root / "store",
        x.astype(np.float32),
        lc,
        tc.astype(np.float32),
        area="a",
        fractions=[0.25, 1.0],
        seed=seed,
    )
    xs = x[np.arange(n) % 5 < 3]
    stats = {
        "channels": list(CHANNELS),
        "mean": xs.mean((0, 2, 3)).tolist(),
        "std": xs.std((0, 2, 3)).tolist(),
        "areas": ["a"],
        "n_chips": n,
    }
    (root / "stats.json").write_text(json.dumps(stats))
    return store, root / "stats.json"


def cfg(store, stats, out, method="mae", hp=None, **kw):
    """A ``sarssl.selfsup.pretrain.train`` configuration on a tiny store (CPU, quiet)."""
    from sarssl.selfsup.pretrain import resolve_hparams

    c = {
        "method": method,
        "hparams": resolve_hparams(method, hp or MAE_HP),
        "seed": 7,
        "chips_dirs": [str(store)],
        "stats": str(stats),
        "out_dir": str(out),
        "device": "cpu",
        "quiet": True,
        "threads": 1,
    }
    c.update(kw)
    return c


def losses(out):
    """The losses of a pretraining run's metrics.jsonl, in step order."""
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# fake HTTP server for the downloaders (127.0.0.1 only, never a real service)
# ---------------------------------------------------------------------------------------
class FakeServer(ThreadingHTTPServer):
    """Routes ``(method, path) -> handler(h, query, body)``; logs every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[tuple[str, str], object] = {}
        self.log: list[dict] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def route(self, method: str, path: str):
        def deco(fn):
            self.routes[(method, path)] = fn
            return fn

        return deco

    def requests(self, path_prefix: str) -> list[dict]:
        return [r for r in self.log if r["path"].startswith(path_prefix)]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.log.append(
                {
                    "method": method,
                    "path": parts.path,
                    "query": parts.query,
                    "headers": dict(self.headers),
                    "body": body,
                }
            )
        fn = self.server.routes.get((method, parts.path))
        if fn is None:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")
            return
        fn(self, parse_qs(parts.query), body)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


def send_bytes(h, data: bytes, *, status: int = 200, headers: dict | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def send_json(h, obj, status: int = 200) -> None:
    send_bytes(
        h, json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def send_file(h, data: bytes, *, drop_after: int | None = None) -> None:
    """Serve ``data`` honouring ``Range: bytes=N-``; optionally cut the body short."""
    rng = h.headers.get("Range")
    start = 0
    if rng and rng.startswith("bytes="):
        start = int(rng[6:].split("-")[0])
        if start >= len(data):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        h.send_response(200)
    body = data[start:]
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Accept-Ranges", "bytes")
    h.end_headers()
    if drop_after is not None:
        h.wfile.write(body[:drop_after])
        h.wfile.flush()
        h.close_connection = True  # the client sees fewer bytes than Content-Length
        return
    h.wfile.write(body)


@pytest.fixture
def server():
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


class Sleeps(list):
    """Records requested waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(**kw):
    """An :class:`sarssl.acquire.http.HttpClient` for tests: no real sleeping, short timeouts."""
    from sarssl.acquire.http import HttpClient

    kw.setdefault("sleep", Sleeps())
    kw.setdefault("backoff", 0.5)
    kw.setdefault("timeout", 5)
    kw.setdefault("progress", False)
    return HttpClient(**kw)


# --------------------------------------------------------------------------------------
# synthetic fine-tuning runs (tables, statistics, result figures)
# --------------------------------------------------------------------------------------
def synthetic_targets(task: str, area: str, n_chips: int = 30, size: int = 16):
    """Test chip ids and targets of one (task, area), the same for every run there."""
    import zlib

    import numpy as np

    rng = np.random.default_rng(zlib.crc32(f"{task}|{area}".encode()))
    ids = np.array([f"32633_{area}_{i:03d}" for i in range(n_chips)])
    if task == "landcover":
        target = rng.integers(0, 6, size=(n_chips, size, size)).astype(np.uint8)
        target[:, :2] = 255  # unlabelled pixels
        return ids, target
    return ids, rng.uniform(0.0, 80.0, size=n_chips).astype(np.float32)


def synthetic_predictions(task: str, target, quality: float, key: str):
    """Predictions of a run of the given quality (0 = random, 1 = perfect), seeded by key."""
    import zlib

    import numpy as np

    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if task == "landcover":
        wrong = rng.random(target.shape) > quality
        guess = rng.integers(0, 6, size=target.shape).astype(np.uint8)
        return np.where(wrong, guess, np.where(target == 255, 0, target)).astype(np.uint8)
    return (target + rng.normal(0.0, 40.0 * (1.0 - quality), size=target.shape)).astype(np.float32)


def write_finetune_run(root, run: dict, quality: float, n_chips: int = 30, size: int = 16):
    """One run folder as ``sarssl finetune`` writes it (metrics.json + predictions.npz), under
    ``root/TASK/INIT/PROTOCOL/AREA/fF_sS/``; the metric values are computed from the
    predictions. ``run`` holds the run keys (task, init, protocol, fraction, seed,
    pretrain_area, finetune_area) and may hold ``lr``. Returns the metrics.json path."""
    import numpy as np

    from sarssl.downstream import statistics

    task, area = run["task"], run["finetune_area"]
    ids, target = synthetic_targets(task, area, n_chips, size)
    key = "|".join(str(run[k]) for k in statistics.RUN_KEYS)
    pred = synthetic_predictions(task, target, quality, key)
    perm = np.random.default_rng(len(key)).permutation(n_chips)  # any chip order
    sums = statistics.chip_components(task, pred, target).sum(0)
    rows = [
        dict(
            {k: run[k] for k in statistics.RUN_KEYS},
            n_train_chips=max(1, int(round(400 * run["fraction"]))),
            metric=m,
            value=float(statistics.metric_from_components(task, m, sums)),
            epochs=5,
            wall_s=1.5,
            **({"lr": run["lr"]} if "lr" in run else {}),
        )
        for m in (("miou", "overall_accuracy") if task == "landcover" else ("rmse", "mae", "r2"))
    ]
    out = (
        Path(root)
        / task
        / run["init"]
        / run["protocol"]
        / area
        / f"f{run['fraction']}_s{run['seed']}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(rows))
    np.savez_compressed(
        out / "predictions.npz",
        rows=perm,
        ids=ids[perm],
        pred=pred[perm],
        target=target[perm],
    )
    return out / "metrics.json"

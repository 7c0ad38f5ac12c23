"""Shared fixtures: the repository root and a helper that runs Snakemake in a subprocess.

Workflow tests run ``snakemake`` exactly as a user would (the venv's executable, the
repository's ``workflow/Snakefile``), in a temporary working directory, so they never touch
``results/`` of the checkout and can run in parallel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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

"""Write (or ``--check``) ./Dockerfile: Snakemake's ``--containerize`` output for the conda
envs of workflow/envs/ plus the sarssl blocks (CUDA override, the package install).

Snakemake's own generator decides the ``/conda-envs/<hash>`` prefixes (hashes of each env
file and its pin and post-deploy files), which is where ``--sdm conda apptainer`` looks for
the envs, so the Dockerfile must be regenerated whenever an env changes. Snakemake asks
conda only for its version and platform here, so a stub ``conda`` answering those is put
on PATH (none is needed on the machine); the result is what a real conda gives on
linux-64. ``tests/test_deploy.py`` fails when ./Dockerfile is stale.

    python workflow/envs/make_dockerfile.py           # rewrite ./Dockerfile
    python workflow/envs/make_dockerfile.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

CONDA_STUB = """#!/bin/sh
case "$1 $2" in
  "--version ") echo "conda 24.7.1";;
  "info --json") echo '{"conda_prefix": "/opt/conda", "platform": "linux-64"}';;
  "config --get") echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "conda stub: only --version/info/config are answered" >&2; exit 1;;
esac
"""

TOP = """# >>> sarssl
# Container image of the workflow's conda envs, for `snakemake --sdm conda apptainer`
# (or docker) on machines where building conda envs is slow or impossible.
# Everything outside the sarssl markers is the output of Snakemake itself,
#   snakemake --configfile config/test.yaml --replace-workflow-config --containerize
# (the /conda-envs/<hash> paths are the hashes Snakemake looks for). Regenerate after
# changing an env: python workflow/envs/make_dockerfile.py (tests/test_deploy.py checks).
# Build (needs docker; not built by the project's tests):
#   docker build -t sarssl:0.1.0 .
#   apptainer build sarssl.sif docker-daemon://sarssl:0.1.0     # for Apptainer
# The torch env gets conda-forge's CUDA 13.0 build (driver >= 580 on the GPU nodes).
ENV CONDA_OVERRIDE_CUDA=13.0
# <<< sarssl
"""

BOTTOM = """# >>> sarssl
# The sarssl package itself into every env (what workflow/envs/*.post-deploy.sh do when
# Snakemake builds the envs; Snakemake's containerize does not run those scripts).
COPY pyproject.toml README.md LICENSE /opt/sarssl/
COPY src /opt/sarssl/src
RUN for env in /conda-envs/*/; do \\
      conda run --prefix "$env" python -m pip install --no-deps --no-build-isolation \\
        --no-cache-dir /opt/sarssl || exit 1; \\
    done
# <<< sarssl
"""


def containerize() -> str:
    """``snakemake --containerize`` of the tiny config, run on a copy of workflow/."""
    snakemake = Path(sys.executable).with_name("snakemake")
    exe = str(snakemake) if snakemake.exists() else shutil.which("snakemake")
    if exe is None:
        raise SystemExit("snakemake not found (make env)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "workflow", tmp / "workflow")
        shutil.copytree(ROOT / "config", tmp / "config")
        (tmp / "stub").mkdir()
        (tmp / "stub" / "conda").write_text(CONDA_STUB)
        (tmp / "stub" / "conda").chmod(0o755)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(tmp / "stub"), env.get("PATH", "")])
        cmd = [exe, "--configfile", "config/test.yaml", "--replace-workflow-config"]
        res = subprocess.run(
            [*cmd, "--containerize"], cwd=tmp, env=env, capture_output=True, text=True
        )
        if res.returncode != 0:
            raise SystemExit(f"snakemake --containerize failed:\n{res.stderr[-3000:]}")
        return res.stdout


def dockerfile_text(generated: str) -> str:
    lines = generated.rstrip("\n").split("\n")
    return "\n".join(lines[:3]) + "\n" + TOP + "\n".join(lines[3:]) + "\n\n" + BOTTOM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    text = dockerfile_text(containerize())
    current = DOCKERFILE.read_text() if DOCKERFILE.is_file() else ""
    if current == text:
        return 0
    if args.check:
        print(f"{DOCKERFILE}: stale; run python workflow/envs/make_dockerfile.py", file=sys.stderr)
        return 1
    DOCKERFILE.write_text(text)
    print(f"wrote {DOCKERFILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

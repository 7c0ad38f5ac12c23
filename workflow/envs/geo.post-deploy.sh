#!/usr/bin/env bash
# Snakemake runs this once after creating the conda env (with the env activated):
# install the sarssl package of this checkout into it, without touching the pinned
# conda-forge dependencies.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python -m pip install --no-deps --no-build-isolation -e "$repo"

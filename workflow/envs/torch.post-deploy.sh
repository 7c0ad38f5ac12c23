#!/usr/bin/env bash
# Snakemake runs this once after creating the conda env, with the env activated, from a
# copy placed next to the env (<conda-prefix>/<hash>_.post-deploy.sh): it cannot find the
# checkout relative to itself or the working directory. It installs the sarssl package,
# without touching the pinned conda-forge dependencies, from SARSSL_SOURCE, which the
# workflow exports (workflow/rules/common.smk: the checkout holding the Snakefile that is
# running, wherever Snakemake runs from: --directory, --conda-prefix, a local module).
# Set SARSSL_SOURCE yourself for a remote (GitHub) module or a release: a checkout path,
# or any pip requirement ("sarssl==0.1.0", "git+https://...@TAG"). See README, Deployment.
set -euo pipefail
source="${SARSSL_SOURCE:-}"
if [ -z "$source" ]; then
  echo "post-deploy: SARSSL_SOURCE is not set (no local sarssl checkout behind the" \
    "workflow); export SARSSL_SOURCE=<checkout path or pip requirement>" >&2
  exit 1
fi
if [ -d "$source" ]; then
  if [ ! -f "$source/pyproject.toml" ]; then
    echo "post-deploy: SARSSL_SOURCE=$source has no pyproject.toml" >&2
    exit 1
  fi
  # editable: the env follows the checkout's code (a pulled fix needs no env rebuild)
  python -m pip install --no-deps --no-build-isolation -e "$source"
else
  python -m pip install --no-deps "$source"
fi

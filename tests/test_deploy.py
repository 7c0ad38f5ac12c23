"""Deployment the standard Snakemake ways: from any working directory, as a module, with
conda envs that install this package wherever Snakemake puts them, and a container image
definition that is Snakemake's own ``--containerize`` output.

No conda on the test machine: a stand-in ``conda`` (a shell script answering the
commands Snakemake sends: ``--version``, ``info --json``, ``config --get``, ``[env]
create``, ``clean``, plus the ``activate`` script) lets the real Snakemake create "envs" whose
``python`` records what it was asked to do. Snakemake itself copies and runs the real
post-deploy scripts exactly as with conda, so the tests see which path they install from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEFILE, TEST_CONFIG, snakemake_executable

pytestmark = pytest.mark.workflow

FAKE_CONDA = r"""#!/bin/sh
# stand-in for conda: what Snakemake's conda deployment calls, nothing else
root="$(cd "$(dirname "$0")/.." && pwd)"
case "$1 $2" in
  "--version ") echo "conda 24.7.1"; exit 0;;
  "info --json") printf '{"conda_prefix": "%s", "platform": "linux-64"}\n' "$root"; exit 0;;
  "config --get") echo '{"get": {"channel_priority": "strict"}}'; exit 0;;
  "clean "*) exit 0;;
esac
prefix=""; file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift;;
    --file) file="$2"; shift;;
  esac
  shift
done
[ -n "$prefix" ] || { echo "fake conda: unsupported call" >&2; exit 1; }
mkdir -p "$prefix/bin"
echo "$file" > "$prefix/created-from"
cat > "$prefix/bin/python" <<'PY'
#!/bin/sh
echo "$PWD|$*" >> "$CONDA_PREFIX/python-calls"
PY
chmod +x "$prefix/bin/python"
"""
ACTIVATE = 'export CONDA_PREFIX="$1"; export PATH="$1/bin:$PATH"\n'


@pytest.fixture(scope="module")
def fake_conda(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fakeconda")
    (root / "bin").mkdir()
    (root / "bin" / "conda").write_text(FAKE_CONDA)
    (root / "bin" / "conda").chmod(0o755)
    (root / "bin" / "activate").write_text(ACTIVATE)
    return root


def snakemake(cwd: Path, *args: str, path: Path | None = None, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "SARSSL_SOURCE"}
    env.update(env_extra or {})
    bins = [str(Path(sys.executable).parent)] + ([str(path)] if path else [])
    env["PATH"] = os.pathsep.join(bins + [env.get("PATH", "")])
    return subprocess.run(
        [snakemake_executable(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def created_envs(prefix: Path) -> dict[str, list[str]]:
    """env name (from the header of the pin file it was created from) -> the python calls
    its post-deploy script made."""
    out = {}
    for env in sorted(p for p in prefix.iterdir() if (p / "created-from").is_file()):
        source = Path((env / "created-from").read_text().strip())
        assert source.name.endswith(".pin.txt"), source  # Snakemake's copy of the pin file
        name = re.match(r"# Conda pin file for (\w+)\.yaml", source.read_text()).group(1)
        out[name] = (env / "python-calls").read_text().splitlines()
    return out


def test_conda_envs_install_the_checkout_from_any_directory(fake_conda, tmp_path):
    """--directory elsewhere, --conda-prefix elsewhere, run from a third directory: the
    post-deploy scripts (copied by Snakemake into the prefix) install this checkout."""
    work, prefix, cwd = tmp_path / "work", tmp_path / "prefix", tmp_path / "cwd"
    for d in (work, cwd):
        d.mkdir()
    args = [
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(work),
        "--configfile",
        str(TEST_CONFIG),
        "--replace-workflow-config",
        "--sdm",
        "conda",
        "--conda-create-envs-only",
        "--conda-prefix",
        str(prefix),
        "--cores",
        "1",
    ]
    res = snakemake(cwd, *args, path=fake_conda / "bin")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    envs = created_envs(prefix)
    # every env, each created from its pin file (workflow/envs/<env>.linux-64.pin.txt)
    assert set(envs) == {"geo", "plot", "torch"}, envs
    for name, calls in envs.items():
        assert len(calls) == 1, (name, calls)
        _, argv = calls[0].split("|")
        assert argv == f"-m pip install --no-deps --no-build-isolation -e {ROOT}", argv
    assert not any(cwd.iterdir())  # nothing written where Snakemake was started
    # the copies Snakemake ran sit in the prefix: the old `../..` would resolve to tmp_path
    assert list(prefix.glob("*.post-deploy.sh"))

    # a user's SARSSL_SOURCE wins: a release (any pip requirement) instead of the checkout
    prefix2 = tmp_path / "prefix2"
    args[args.index(str(prefix))] = str(prefix2)
    res = snakemake(
        cwd, *args, path=fake_conda / "bin", env_extra={"SARSSL_SOURCE": "sarssl==0.1.0"}
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    for calls in created_envs(prefix2).values():
        assert calls[0].split("|")[1] == "-m pip install --no-deps sarssl==0.1.0"


def _module_snakefile(work: Path) -> Path:
    shutil.copy(TEST_CONFIG, work / "test.yaml")
    snakefile = work / "Snakefile"
    snakefile.write_text(
        'configfile: "test.yaml"\n\n\n'
        "module sarssl:\n"
        f"    snakefile:\n        {str(SNAKEFILE)!r}\n"
        "    config:\n        config\n\n\n"
        "use rule * from sarssl as sarssl_*\n"
    )
    return snakefile


def test_module_conda_envs_install_the_modules_checkout(fake_conda, tmp_path):
    """Used as a module from a user's own Snakefile elsewhere: the envs install the
    module's checkout (not the user's directory, not the main Snakefile's)."""
    work, cwd = tmp_path / "study", tmp_path / "cwd"
    work.mkdir()
    cwd.mkdir()
    snakefile = _module_snakefile(work)
    res = snakemake(
        cwd,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(work),
        "--sdm",
        "conda",
        "--conda-create-envs-only",
        "--cores",
        "1",
        path=fake_conda / "bin",
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    envs = created_envs(work / ".snakemake" / "conda")
    assert envs
    for calls in envs.values():
        assert calls[0].split("|")[1].endswith(f"-e {ROOT}"), calls


@pytest.mark.slow
def test_tiny_dag_as_a_module_from_another_directory(tmp_path):
    """The tiny DAG through a user's module Snakefile, started from a third directory:
    the acquisition stages up to the catalogue checkpoint really run (the rest of the DAG
    is tests/test_workflow.py's), then a dry-run plans every remaining stage."""
    work, cwd = tmp_path / "study", tmp_path / "cwd"
    work.mkdir()
    cwd.mkdir()
    snakefile = _module_snakefile(work)
    base = ["--snakefile", str(snakefile), "--directory", str(work), "--cores", "2"]
    res = snakemake(cwd, *base, "--until", "sarssl_catalogue")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for area in cfg["areas"]:
        rows = (work / "results" / "catalogue" / f"{area}.csv").read_text().splitlines()
        assert len(rows) > 1, area  # a header and the simulated scenes
        assert (work / "logs" / "catalogue" / f"{area}.log").is_file()
    assert not any(cwd.iterdir())
    res = snakemake(cwd, *base, "--dry-run")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    planned = set(re.findall(r"^rule (sarssl_\w+):", res.stdout, re.M))
    assert {"sarssl_preprocess", "sarssl_pretrain", "sarssl_finetune", "sarssl_tables"} <= planned
    assert "sarssl_catalogue" not in planned  # done, and not redone


def _sarssl_blocks_removed(text: str) -> str:
    return re.sub(r"# >>> sarssl\n.*?# <<< sarssl\n", "", text, flags=re.S)


def test_dockerfile_is_snakemakes_containerize_output(fake_conda, tmp_path):
    """Outside its marked sarssl blocks, ./Dockerfile is exactly what
    `snakemake --containerize` prints for the current envs (so the /conda-envs/<hash>
    prefixes are the ones Snakemake looks for); every file it copies exists."""
    for name in ("workflow", "config"):
        shutil.copytree(ROOT / name, tmp_path / name)
    res = snakemake(
        tmp_path,
        "--configfile",
        "config/test.yaml",
        "--replace-workflow-config",
        "--containerize",
        path=fake_conda / "bin",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert _sarssl_blocks_removed(dockerfile).rstrip() == res.stdout.rstrip(), (
        "Dockerfile is stale: python workflow/envs/make_dockerfile.py"
    )
    ignored = (ROOT / ".dockerignore").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
                # the build context keeps it (.dockerignore: everything else is excluded)
                top = src.split("/")[-1] if src.startswith("workflow/") else src
                assert top in ignored or f"!{src}" in ignored or "*.yaml" in ignored, src
    assert "CONDA_OVERRIDE_CUDA=13.0" in dockerfile


def test_license_and_catalogue_metadata():
    pyproject = (ROOT / "pyproject.toml").read_text()
    spdx = re.search(r'^license = "([^"]+)"', pyproject, re.M).group(1)
    text = (ROOT / "LICENSE").read_text()
    assert spdx == "Apache-2.0" and "Apache License" in text and "Version 2.0" in text
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert set(usage["software-stack-deployment"]) <= {"conda", "apptainer", "apptainer+conda"}
    assert (ROOT / "workflow" / "Snakefile").is_file() and (ROOT / "config" / "README.md").is_file()

"""The conda environments in workflow/envs/ parse, pin every package, use conda-forge, and
provide every third-party package that the code run by their rules imports.

How the check works: each rule's ``shell:`` names the ``sarssl`` subcommand it runs (and,
for ``sarssl plot``, the figure); the test follows that subcommand's module and every
``sarssl`` module it imports (at any depth, imports inside functions included, because a
rule runs those code paths), collects the third-party top-level imports, maps them to
conda package names and asserts the rule's env lists them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from sarssl.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "workflow" / "envs"
RULES = ROOT / "workflow" / "rules"
SRC = ROOT / "src" / "sarssl"

# import name -> conda-forge package name (where they differ)
CONDA_NAME = {
    "yaml": "pyyaml",
    "torch": "pytorch",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "affine": "affine",
    "osgeo": "gdal",
}
# Packages that come with another listed package (conda-forge dependencies).
PROVIDED_BY = {
    "affine": "rasterio",
    "numpy": None,
}
# Optional imports guarded at run time (ImportError fallbacks), not needed by the rules.
OPTIONAL = {
    "tensorboard",
    "sarsen",
    "xarray",
    "xarray_sentinel",
    "pyrosar",
    "spatialist",
    "psycopg2",
    "geopandas",
    "sqlalchemy",
    "numba_progress",
}


def _env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def _deps(env: Path) -> dict[str, str | None]:
    spec = yaml.safe_load(env.read_text())
    out: dict[str, str | None] = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):  # a pip: section
            for item in dep.get("pip", []):
                name, _, version = item.partition("==")
                out[name.strip().lower()] = version or None
            continue
        name, _, version = str(dep).partition("=")
        out[name.strip().lower()] = version.lstrip("=") or None
    return out


@pytest.mark.parametrize("env", _env_files(), ids=lambda p: p.name)
def test_env_parses_pins_and_uses_conda_forge(env: Path) -> None:
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"][0] == "conda-forge", f"{env.name}: conda-forge must come first"
    assert set(spec["channels"]) <= {"conda-forge", "nodefaults", "pytorch", "nvidia"}
    unpinned = [
        n for n, v in _deps(env).items() if v is None and n not in ("pip", "setuptools", "wheel")
    ]
    assert not unpinned, f"{env.name}: unpinned packages {unpinned}"


def _rule_blocks() -> list[tuple[str, str]]:
    """(rule name, rule text) for every rule and checkpoint of the workflow."""
    blocks = []
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        parts = re.split(r"^(?:rule|checkpoint)\s+(\w+):", text, flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            blocks.append((name, body))
    return blocks


def _figure_modules() -> dict[str, str]:
    """figure name -> module that registers it."""
    out = {}
    for path in sorted((SRC / "figures").glob("*.py")):
        for name in re.findall(r"register_figure\(\s*\"([\w-]+)\"", path.read_text()):
            rel = path.relative_to(SRC.parent).with_suffix("")
            out[name] = ".".join(rel.parts)
    return out


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (SRC.parent / rel.with_suffix(".py"), SRC.parent / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imports(module: str, nested: bool) -> tuple[set[str], set[str]]:
    """(sarssl modules, third-party top-level names) that ``module`` imports: at module
    level only, or (``nested``) also inside functions and classes."""
    path = _module_file(module)
    assert path is not None, module
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    internal, external = set(), set()
    nodes = ast.walk(tree) if nested else _module_level(tree)
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
                names += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "sarssl":
                if _module_file(name) is not None:
                    internal.add(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                external.add(top)
    return internal, external


def _module_level(tree: ast.Module):
    """Statements executed on import: top level, including try/if blocks, not functions."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)


def _closure(start: str) -> set[str]:
    """Third-party packages the command's code path needs: everything the entry module
    imports (in functions too: the command runs them) and, from there, what each reached
    sarssl module imports when it is loaded, plus the imports inside the sarssl functions
    the entry module imports by name."""
    internal, external = _imports(start, nested=True)
    seen, todo = {start}, list(internal)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        inner, ext = _imports(mod, nested=False)
        external |= ext
        todo.extend(inner - seen)
    return external


def _rule_requirements() -> list[tuple[str, str, set[str]]]:
    figures = _figure_modules()
    out = []
    for rule, body in _rule_blocks():
        env = re.search(r"conda:\s*\n\s*\"\.\./envs/([\w.-]+)\"", body)
        if env is None:
            continue
        commands = re.findall(r"(?:sarssl|launcher\})\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", body)
        modules = set()
        for cmd, sub in commands:
            if cmd not in COMMANDS:
                continue
            if cmd == "plot" and sub in figures:
                modules.add(figures[sub])
            modules.add(COMMANDS[cmd][0])
        if modules:
            needed = set().union(*(_closure(m) for m in modules))
            out.append((rule, env.group(1), needed))
    return out


def test_every_rule_with_a_command_is_checked() -> None:
    checked = {rule for rule, _env, _needed in _rule_requirements()}
    for expected in ("preprocess", "composite", "chips", "pretrain", "finetune", "tables"):
        assert expected in checked


@pytest.mark.parametrize(
    "rule,env,needed", _rule_requirements(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_env_provides_every_imported_package(rule: str, env: str, needed: set[str]) -> None:
    deps = _deps(ENVS / env)
    missing = []
    for name in sorted(needed - OPTIONAL):
        conda = CONDA_NAME.get(name, name).lower().replace("_", "-")
        provider = PROVIDED_BY.get(name)
        if conda in deps or (provider is not None and provider in deps):
            continue
        missing.append(f"{name} (conda: {conda})")
    assert not missing, f"rule {rule}: env {env} lacks {missing}"


# conda-forge name -> pip name in requirements.txt, where they differ
PIP_NAME = {"pytorch": "torch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            out[_norm(name)] = version.split("+")[0]  # 2.14.1+cu130 -> 2.14.1
    return out


@pytest.mark.parametrize("env", _env_files(), ids=lambda p: p.name)
def test_env_versions_equal_the_pip_lock(env: Path) -> None:
    """Every package pinned in both the env and requirements.txt has one version: the
    conda runs and the .venv runs use the same code."""
    lock = _pip_lock()
    differ = []
    for name, version in _deps(env).items():
        pip = _norm(PIP_NAME.get(name, name))
        if version is not None and pip in lock and lock[pip] != version:
            differ.append(f"{name}: env {version}, requirements.txt {lock[pip]}")
    assert not differ, f"{env.name}: {differ}"


def test_pin_files_are_current() -> None:
    """workflow/envs/<env>.linux-64.pin.txt exist and match their env (make_pins.py)."""
    import subprocess

    res = subprocess.run(
        [sys.executable, str(ENVS / "make_pins.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    for env in _env_files():
        pins = (ENVS / f"{env.stem}.linux-64.pin.txt").read_text().splitlines()
        specs = [line for line in pins if line and not line.startswith("#")]
        assert specs == [
            f"conda-forge::{d}" for d in yaml.safe_load(env.read_text())["dependencies"]
        ]


def test_post_deploy_scripts_do_not_depend_on_their_location() -> None:
    """Snakemake copies X.post-deploy.sh next to the env it creates (.snakemake/conda/ or
    --conda-prefix): the scripts must install from SARSSL_SOURCE, never relative to
    themselves (tests/test_deploy.py runs them for real)."""
    for env in _env_files():
        script = (ENVS / f"{env.stem}.post-deploy.sh").read_text()
        assert "SARSSL_SOURCE" in script and "BASH_SOURCE" not in script and "../.." not in script

"""The package keeps the shape docs/architecture.md promises.

* every stage is a subpackage with a docstring saying what it owns;
* imports go down the layers only, and no import cycle exists among sarssl modules,
  counting imports inside functions too (a lazy import is still a dependency);
* no module imports another module's private (``_name``) objects;
* the study's vocabulary is stdlib-only, so the workflow can import it before any job.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "sarssl"

#: layer of each top-level part of the package; a module may import its own layer or lower
LAYERS = {
    "vocabulary": 0,
    "errors": 0,
    "io": 0,
    "rasterio_blocks": 0,
    "slurm_check": 0,
    "sar": 1,
    "catalogue": 1,
    "acquire": 1,
    "data": 2,
    "engine": 3,
    "encoders": 3,
    "interop": 3,
    "selfsup": 4,
    "downstream": 4,
    "demo": 5,
    "figures": 5,
    "cli": 6,
    "__init__": 6,
}
SUBPACKAGES = ("sar", "catalogue", "data", "selfsup", "downstream", "figures", "demo", "acquire")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("sarssl")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("sarssl"):
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    """module -> sarssl modules it imports (a name that is a module counts as that module)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, names, _ in _imports(name, path):
            for n in names:
                if f"{target}.{n}" in MODULES:
                    edges[name].add(f"{target}.{n}")
            if target in MODULES and not (names and all(f"{target}.{n}" in MODULES for n in names)):
                edges[name].add(target)
        edges[name].discard(name)
    return edges


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_stage_is_a_documented_subpackage():
    for sub in SUBPACKAGES:
        init = PKG / sub / "__init__.py"
        assert init.exists(), sub
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 15, f"sarssl.{sub} needs a docstring saying what it owns"


def test_no_import_cycles():
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in MODULES:
        if v not in index:
            visit(v)
    # a package importing its own submodules (re-exports) is not a cycle of concern
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, f"import cycles: {real}"


def test_imports_go_down_the_layers():
    bad = []
    for name, targets in _edges().items():
        src = LAYERS[_part(name)]
        for t in targets:
            if t == "sarssl" and _part(name) != "__init__":
                continue  # `from sarssl import __version__`
            if LAYERS[_part(t)] > src:
                bad.append(f"{name} -> {t}")
    assert not bad, "imports up the layers (see docs/architecture.md):\n" + "\n".join(sorted(bad))


def test_no_private_names_imported_across_modules():
    bad = []
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != name:
                    bad.append(f"{path.relative_to(SRC)}:{line}: {n} from {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["sarssl.vocabulary", "sarssl"])
def test_vocabulary_needs_only_the_standard_library(module):
    code = (
        "import sys; import importlib; importlib.import_module(%r); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'torch', 'pandas', 'rasterio', 'osgeo', 'matplotlib')); print(bad)" % module
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

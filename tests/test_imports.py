"""Import boundaries: ``manual`` never sees Lightning or the reference, the reference never sees
``manual``, and ``mirror`` (shared by both) sees neither."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
FORBIDDEN = {
    "manual": LIGHTNING + ("lightning_ref",),
    "lightning_ref": ("manual",),
    "mirror": LIGHTNING + ("manual", "lightning_ref"),
}


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports (relative imports resolved), with line numbers.

    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _violates(module: str, forbidden) -> bool:
    top = module.split(".")[0]
    return top in forbidden


def test_packages_exist():
    for package in FORBIDDEN:
        assert _files(package), f"no .py files under {package}/"


CASES = [(pkg, path) for pkg in FORBIDDEN for path in _files(pkg)]


@pytest.mark.parametrize("package,path", CASES, ids=[str(p.relative_to(ROOT)) for _, p in CASES])
def test_static_import_boundaries(package, path):
    bad = [(line, mod) for line, mod in imported_modules(path) if _violates(mod, FORBIDDEN[package])]
    assert not bad, "\n".join(f"{path.relative_to(ROOT)}:{line} imports {mod}" for line, mod in bad)


def test_scalar_uses_math_only():
    """Question 3 is plain Python: manual/scalar.py imports nothing but math (and __future__)."""
    path = ROOT / "manual" / "scalar.py"
    mods = {mod.split(".")[0] for _, mod in imported_modules(path)}
    assert mods <= {"math", "__future__"}, f"manual/scalar.py imports {sorted(mods)}"


def test_analyser_catches_violations(tmp_path):
    """The AST scan sees plain, aliased, from-, relative and dynamic imports."""
    pkg = tmp_path / "manual"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import lightning as L\n"
        "from lightning.pytorch import Trainer\n"
        "from ..lightning_ref import MLP\n"
        "import importlib\n"
        "m = importlib.import_module('pytorch_lightning')\n"
        "def f():\n"
        "    import lightning_ref.model\n")
    (pkg / "ok.py").write_text("from . import nn\nfrom .nn import Linear\nimport torch\n")
    mods = [m for _, m in imported_modules(pkg / "bad.py", root=tmp_path)]
    flagged = {m for m in mods if _violates(m, FORBIDDEN["manual"])}
    # `from ..lightning_ref import MLP` inside manual/ resolves to the top-level lightning_ref.
    assert {"lightning", "lightning.pytorch", "pytorch_lightning", "lightning_ref", "lightning_ref.MLP",
            "lightning_ref.model"} <= flagged
    ok = [m for _, m in imported_modules(pkg / "ok.py", root=tmp_path)]
    assert {"manual", "manual.nn", "manual.nn.Linear", "torch"} <= set(ok)
    assert not any(_violates(m, FORBIDDEN["manual"]) for m in ok)


_PROBE = r"""
import importlib, pkgutil, sys
pkg = importlib.import_module({package!r})
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    if info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
forbidden = {forbidden!r}
bad = sorted(m for m in sys.modules if m.split(".")[0] in forbidden or m.split(".")[0].startswith("lightning"))
print("LOADED", bad)
sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("package", ["manual", "mirror"])
def test_dynamic_import_pulls_in_no_lightning(package):
    """Importing the package and all its submodules loads no lightning* and no forbidden sibling."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = _PROBE.format(package=package, forbidden=tuple(FORBIDDEN[package]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"import {package} loaded: {proc.stdout.strip()} {proc.stderr[-2000:]}"


def test_dynamic_import_reference_does_not_load_manual():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys, lightning_ref\n"
            "bad = sorted(m for m in sys.modules if m == 'manual' or m.startswith('manual.'))\n"
            "print('LOADED', bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"import lightning_ref loaded: {proc.stdout.strip()} {proc.stderr[-2000:]}"

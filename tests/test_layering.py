"""Import layering of the library: each subpackage imports alone, and the dependency rules hold (no cycles).

Rules (architecture.md, "one home per concept"): ``losses`` imports nothing from ``methods``, ``engines`` or
``handlers``; ``networks`` nothing from ``methods``, ``engines`` or ``handlers``; ``methods`` nothing from ``engines``
or ``handlers``; ``handlers`` nothing from ``methods`` or ``engines``; no library module imports the command-line
tools (``cli``, ``quickstart``, ``benchmark``, ``diagnostics``, ``convert``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import semizoo

PACKAGE = Path(semizoo.__file__).parent
TOOLS = {
    "cli",
    "quickstart",
    "reproduce",
    "benchmark",
    *(f"benchmark_{part}" for part in ("build", "data", "inference", "memory", "report", "steps")),
    "diagnostics",
    "convert",
    "fetch",
    "export",
    "stages",
    "__main__",
}
FORBIDDEN = {
    "losses": {"methods", "engines", "handlers"},
    "networks": {"methods", "engines", "handlers"},
    "methods": {"engines", "handlers"},
    "handlers": {"methods", "engines"},
    "metrics": {"methods", "engines", "handlers", "networks", "losses"},
    "schedules": {"methods", "engines", "handlers", "networks", "losses"},
}


def _semizoo_imports(path: Path) -> set[str]:
    """Top-level semizoo subpackages/modules that ``path`` imports (absolute or relative)."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package_parts = module_parts[:-1] if path.name != "__init__.py" else module_parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = list(base) + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            else:
                names = [(node.module or "").split(".")]
            for parts in names:
                if parts[0] == "semizoo" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "semizoo" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_the_import_parser_sees_relative_imports():
    assert "losses" in _semizoo_imports(PACKAGE / "methods" / "supervised.py")
    assert "metrics" in _semizoo_imports(PACKAGE / "handlers" / "report.py")
    assert "data" in _semizoo_imports(PACKAGE / "quickstart.py")  # imported inside a function


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_rules(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else [PACKAGE / f"{layer}.py"]:
        bad = _semizoo_imports(path) & (FORBIDDEN[layer] | TOOLS)
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)} imports {sorted(bad)}")
    assert not offenders, offenders


def test_no_library_module_imports_the_tools():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if _top(path) not in TOOLS and _semizoo_imports(path) & TOOLS
    ]
    assert not offenders, offenders


@pytest.mark.slow
def test_each_subpackage_imports_alone():
    """A fresh interpreter per subpackage imports ``semizoo.<subpackage>`` first (all started at once): a cycle that
    needs another import order fails here, and a subpackage loads only what its layer allows."""
    code = "import sys, semizoo.{}; print(sorted(m for m in sys.modules if m.startswith('semizoo.')))"
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", code.format(name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name in semizoo.SUBPACKAGES
    }
    for name, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"import semizoo.{name} alone failed:\n{err[-3000:]}"
        loaded = {module.split(".")[1] for module in eval(out.strip().splitlines()[-1])}
        assert not loaded & TOOLS, (name, loaded)
        assert not loaded & FORBIDDEN.get(name, set()), f"semizoo.{name} loaded {sorted(loaded)}"

"""The import rules of ``docs/architecture.md``, checked on every module (lazy imports included),
so the page stays true: hospital code never imports server code and the reverse, ``he/`` stands
alone, and what both sides share lives in ``common/``, which imports neither side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "he", "client", "server", "strategies", "models", "privacy", "experiments")


def imports_of(package: str) -> dict[str, set[str]]:
    """Every module a package's files import (absolute imports, at any depth), by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path.relative_to(ROOT).as_posix()] = names
    return found


def violations(package: str, forbidden: set[str]) -> list[str]:
    return sorted(
        f"{path} imports {name}"
        for path, names in imports_of(package).items()
        for name in names
        if name.split(".")[0] in forbidden
    )


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("client", {"server", "strategies"}),
        ("server", {"client"}),
        ("strategies", {"client", "server"}),
        ("common", {"client", "server", "strategies", "experiments"}),
        ("he", {*PACKAGES} - {"he"} | {"flwr", "torch", "hydra", "omegaconf", "mlflow"}),
        ("models", {"flwr", "he", "client", "server", "strategies", "experiments"}),
        ("privacy", {"flwr", "client", "server", "strategies", "experiments"}),
    ],
)
def test_a_package_imports_nothing_its_rules_forbid(package: str, forbidden: set[str]) -> None:
    assert violations(package, forbidden) == []


def test_only_experiments_import_hydra() -> None:
    for package in set(PACKAGES) - {"experiments"}:
        assert violations(package, {"hydra", "omegaconf"}) == []


def test_the_hospital_app_starts_without_the_training_stack() -> None:
    """In deployment every message starts a fresh ClientApp process; key set-up and decryption
    messages must not pay for importing torch, Opacus or scikit-learn (seconds per message)."""
    probe = (
        "import sys, client.app; print(sorted(m for m in ('torch', 'opacus', 'sklearn') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing client.app loads {loaded}"


def module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` counts ``a.b`` when that is
    a module, else ``a``)."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            targets: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                    targets |= (submodules & modules) or {node.module}
            graph[module] = (targets & modules) - {module}
    return graph


def test_no_module_imports_itself_back_through_others() -> None:
    """No import cycle between project modules: each module can be read (and loaded) before the
    ones that use it."""
    graph = module_graph()
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            if found := cycle_from(target, [*path, module]):
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        assert (found := cycle_from(module, [])) is None, " -> ".join(found)

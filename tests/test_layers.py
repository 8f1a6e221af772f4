"""The packages import only downward: core at the bottom, then training, then monitoring; the
service on core alone; the benchmarks (``bench``) above monitoring and the service; the CLI
(``emotion_ops``) at the roof, imported by nothing. Every import counts, at the top of a module
or inside a function. No module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import from this project.
ALLOWED = {
    "core": set(),
    "training": {"core"},
    "monitoring": {"core", "training"},
    "service": {"core"},
    "bench": {"core", "training", "monitoring", "service"},
    "emotion_ops": {"core", "training", "monitoring", "service", "bench"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Project package -> the modules of ``package`` that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    upward = {
        target: sorted(modules)
        for target, modules in imported_packages(package).items()
        if target not in ALLOWED[package]
    }
    assert not upward, f"{package} imports {upward}"


def test_only_the_cli_imports_the_benchmarks():
    importers = {
        module for module in imported_packages("emotion_ops").get("bench", set())
        if not module.startswith("emotion_ops/commands/")
    }  # fmt: skip
    assert not importers, f"only emotion_ops/commands/ may import bench: {sorted(importers)}"


def test_no_module_imports_another_modules_private_names():
    found = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ALLOWED:
                    private = [alias.name for alias in node.names if alias.name.startswith("_")]
                    found += [f"{path.relative_to(ROOT)}: {node.module}.{name}" for name in private]
    assert not found, found


def test_the_package_graph_has_no_cycle():
    graph = {package: set(imported_packages(package)) for package in ALLOWED}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step})) for step in graph[start]
        )

    cycles = [package for package in graph if reaches(package, package, {package})]
    assert not cycles, f"packages on an import cycle: {cycles} ({graph})"


def test_every_package_is_in_the_layering_and_in_the_wheel():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(ALLOWED)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ALLOWED:
        assert f'"{package}*"' in pyproject, f"{package} is missing from the wheel's packages"


def test_reading_reports_and_the_registry_loads_no_torch():
    """``emotion-ops reports list`` and the drift job's registry calls must not pay for torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import core.registry, core.store, core.artifact, monitoring.drift, monitoring.job\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_bento_carries_every_package_the_service_imports():
    import yaml

    included = {
        pattern.split("/")[0] for pattern in yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    }
    assert {"service", *ALLOWED["service"]} <= included


def test_the_cli_starts_light_and_reads_reports_without_torch(tmp_path):
    """Every command pays the CLI's imports: they stay light, and a reviewer's ``reports list``
    loads neither torch nor the training stack."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import emotion_ops.cli as cli\n"
        "print(sorted({'torch', 'mlflow', 'sqlalchemy', 'evidently'} & set(sys.modules)))\n"
        "cli.app(['reports', 'list'], standalone_mode=False)\n"
        "print('torch' in sys.modules)\n"
    )
    env = {"EMOTION_VAR_DIR": str(tmp_path / "var"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "[]" and "no drift reports yet" in done.stdout and lines[-1] == "False", done.stdout

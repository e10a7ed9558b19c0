"""The dependency direction of ARCHITECTURE.md §8, checked on every module's real imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level packages it must never import
FORBIDDEN = {
    "models": {"server", "export", "fastapi", "starlette", "uvicorn"},
    "server": {"export"},
    "export": {"server", "fastapi", "starlette"},
}
ENGINE_FORBIDDEN = {"fastapi", "starlette"}
TRAINING_MODULES = ("models.train",)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations() -> list[str]:
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            engine = rel.parts[:2] == ("server", "engine")
            for line, name in imports_of(path):
                top = name.split(".")[0]
                if top in forbidden or (
                    engine and (top in ENGINE_FORBIDDEN or name.startswith("server.api"))
                ):
                    bad.append(f"{rel}:{line} imports {name}")
                if package == "server" and name.startswith(TRAINING_MODULES):
                    bad.append(f"{rel}:{line} imports training code {name}")
    return bad


def test_packages_respect_dependency_direction() -> None:
    assert violations() == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_checker_sees_each_package(package: str) -> None:
    # The rule is only as good as its coverage: every layer must exist and hold modules.
    assert list((ROOT / package).rglob("*.py")), f"{package}/ has no modules to check"


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom server.perception import pfl\n")
    assert (2, "server.perception") in imports_of(bad)

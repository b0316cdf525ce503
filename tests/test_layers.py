"""The code map of the README, enforced: which app package may import which (any import, even one inside a
function), and which third-party frameworks stay out of the model code."""

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# package -> the app packages it may import (its own modules always). Keep equal to the README's code map.
ALLOWED = {
    "recsys": set(),
    "db": {"config"},
    "ingest": {"config", "db"},
    "jobs": {"config", "db", "logs", "recsys", "commands"},
    "commands": {"config", "db", "ingest", "jobs", "recsys"},
    "serving": {"db", "jobs", "recsys"},
    "api": {"config", "db", "jobs", "logs", "recsys", "serving"},
    "console": set(),
}
# Frameworks a package must not import: the models know nothing of HTTP or SQL, the data layer nothing of HTTP.
FORBIDDEN = {
    "recsys": {"fastapi", "starlette", "sqlalchemy", "alembic", "pydantic", "uvicorn"},
    "db": {"fastapi", "starlette", "torch"},
    "serving": {"fastapi", "starlette"},
}


def imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import in ``app/<package>``."""
    out = []
    for path in sorted((APP / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            out += [(str(path.relative_to(APP)), n) for n in names]
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_code_map_allows(package: str) -> None:
    bad = [
        (f, m)
        for f, m in imports(package)
        if m.startswith("app.") and m.split(".")[1] not in ALLOWED[package] | {package}
    ]
    assert not bad, f"app/{package} imports outside its layer: {bad}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_frameworks_stay_out_of_the_lower_layers(package: str) -> None:
    bad = [(f, m) for f, m in imports(package) if m.split(".")[0] in FORBIDDEN[package]]
    assert not bad, f"app/{package} imports {bad}"


def test_the_code_map_covers_every_package() -> None:
    packages = {p.name for p in APP.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)

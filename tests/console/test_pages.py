"""/, /console and /docs: served by the app from the package, nothing loaded from a CDN."""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

import app.console

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = Path(app.console.__file__).parent


def test_home_links_the_console_docs_and_health_checks(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    links = set(re.findall(r'href="([^"]+)"', r.text))
    assert {"/console/", "/docs", "/healthz", "/readyz", "/metrics", "/openapi.json"} <= links


def test_console_is_served_with_its_assets(client: TestClient) -> None:
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200 and "DeepRec console" in page.text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert len(assets) >= 5 and not any(a.startswith(("http:", "https:", "//")) for a in assets)
    for asset in assets:
        assert client.get(f"/console/{asset}").status_code == 200, asset
    assert client.get("/console/nope.js").status_code == 404


def test_docs_use_swagger_ui_from_the_package(client: TestClient) -> None:
    html = client.get("/docs").text
    urls = re.findall(r"(?:https?:)?//[^\s'\"]+", html)
    assert urls == [], urls  # no CDN
    for asset in re.findall(r"'(/docs/assets/[^']+)'", html):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert client.get("/docs/oauth2-redirect").status_code == 200
    r = client.get("/redoc", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/docs"
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/console", "/docs", "/redoc"} & set(paths)  # pages, not API


def test_package_data_carries_every_console_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app.console"]
    packaged = {Path(p) for pattern in patterns for p in glob.glob(pattern, root_dir=CONSOLE)}
    files = {p.relative_to(CONSOLE) for p in (CONSOLE / "static").rglob("*") if p.is_file()}
    assert files and files == packaged, files ^ packaged

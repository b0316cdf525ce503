"""Every log record is written once, in the one configured format (JSON by default, text by setting)."""

import json
import logging

import pytest

from app.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_request_writes_one_json_access_line(make_client, capfd) -> None:
    logging.basicConfig(level="INFO")  # what a host process may have set up: replaced, not doubled
    configure_logging("INFO", "json")  # the CLI's call; create_app calls it again
    client = make_client(log_level="INFO")
    capfd.readouterr()
    assert client.get("/healthz", headers={"X-Request-ID": "req-1"}).status_code == 200
    logging.getLogger("uvicorn").warning("from uvicorn")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    access = [r for r in records if r["logger"] == "deeprec.access"]
    assert len(access) == 1 and access[0]["route"] == "/healthz" and access[0]["request_id"] == "req-1"
    assert [r["message"] for r in records if r["logger"] == "uvicorn"] == ["from uvicorn"]


def test_text_format_by_setting(make_client, capfd) -> None:
    client = make_client(log_format="text", log_level="INFO")
    capfd.readouterr()
    client.get("/healthz", headers={"X-Request-ID": "req-2"})
    lines = [line for line in capfd.readouterr().err.splitlines() if "deeprec.access" in line]
    assert len(lines) == 1
    assert "INFO deeprec.access request request_id=req-2" in lines[0] and "route=/healthz" in lines[0]
    assert not lines[0].lstrip().startswith("{")


def test_request_metrics_name_every_route_by_its_full_path(client) -> None:
    """Routers included from their modules keep the /v1 prefix in the label; FastAPI's own pages are
    named, not counted as unmatched."""
    client.post("/v1/interactions", json={})
    client.get("/v1/jobs/12345")
    client.get("/v1/stats")
    client.get("/openapi.json")
    client.get("/no-such-page")
    text = client.get("/metrics").text
    labels = {line.split('route="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("deeprec_http_requests_total{")}  # fmt: skip
    assert {"/v1/interactions", "/v1/jobs/{job_id}", "/v1/stats", "/openapi.json", "<unmatched>"} <= labels

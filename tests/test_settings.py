"""The settings reference in docs/ is generated from the Settings fields, and `deeprec settings` masks secrets."""

from pathlib import Path

import pytest

from app.cli import main
from app.config import Settings, get_settings, reference_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_docs_configuration_is_the_generated_reference() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference_markdown(), "run: deeprec settings --markdown > docs/configuration.md"
    for name in Settings.model_fields:
        assert f"`DEEPREC_{name.upper()}`" in written


def test_settings_command_prints_values_with_keys_and_passwords_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEEPREC_API_KEYS", "read:reader-secret,admin:admin-secret")
    monkeypatch.setenv("DEEPREC_DATABASE_URL", "postgresql+psycopg://bob:pw-secret@db.example:5432/rec")
    monkeypatch.setenv("DEEPREC_RETRIEVAL_DEPTH", "300")
    get_settings.cache_clear()
    try:
        assert main(["settings"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "secret" not in out
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert lines["DEEPREC_API_KEYS"] == "***"
    assert lines["DEEPREC_DATABASE_URL"] == "postgresql+psycopg://bob:***@db.example:5432/rec"
    assert lines["DEEPREC_RETRIEVAL_DEPTH"] == "300"
    assert lines["DEEPREC_API_KEY"] == "unset"

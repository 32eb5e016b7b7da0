"""`retro serve` refuses unsafe or impossible starts; Settings read RETRO_* variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.settings import Settings, is_loopback


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    names = ("RETRO_API_KEY", "RETRO_HOST", "RETRO_MODEL", "RETRO_INDEX", "RETRO_PORT")
    for name in (*names, "RETRO_KEEP_INDEX_VERSIONS"):
        monkeypatch.delenv(name, raising=False)


def test_serve_refuses_a_public_bind_without_a_key(retro_checkpoint):
    result = CliRunner().invoke(app, ["serve", "--model", str(retro_checkpoint), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "API key" in " ".join(result.output.split())


def test_serve_refuses_missing_folders(tmp_path, retro_checkpoint):
    runner = CliRunner()

    def output(*args) -> str:
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2
        return " ".join(result.output.split())  # rich wraps long lines

    assert "model folder" in output("--model", str(tmp_path / "nope"))
    assert "index folder" in output("--model", str(retro_checkpoint), "--index", str(tmp_path / "nope"))
    assert "--model" in output()


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRO_MODEL", str(tmp_path))
    monkeypatch.setenv("RETRO_API_KEY", "s3cr3t-value")
    monkeypatch.setenv("RETRO_MAX_QUEUE", "3")
    monkeypatch.setenv("RETRO_HOST", "0.0.0.0")
    settings = Settings()
    assert settings.model == tmp_path and settings.max_queue == 3
    assert settings.api_key.get_secret_value() == "s3cr3t-value" and "s3cr3t" not in repr(settings)
    settings.check_bind()  # a key is set: a public bind is allowed


def test_keep_index_versions_is_read_and_must_be_at_least_one(monkeypatch):
    assert Settings().keep_index_versions == 3
    monkeypatch.setenv("RETRO_KEEP_INDEX_VERSIONS", "5")
    assert Settings().keep_index_versions == 5
    monkeypatch.setenv("RETRO_KEEP_INDEX_VERSIONS", "0")
    with pytest.raises(ValidationError, match="keep_index_versions"):
        Settings()
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(keep_index_versions=0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_detection(host, loopback):
    assert is_loopback(host) is loopback
    if not loopback:
        with pytest.raises(ValueError, match="API key"):
            Settings(host=host).check_bind()

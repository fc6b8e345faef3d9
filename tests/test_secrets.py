"""Secrets stay out of what people read: URL passwords in logs and error messages, the
settings' keys in a repr, and the data folder's secret file in the hands of its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rag_async.config import Settings
from rag_async.datadir import private_folder, stored_secret
from rag_async.redaction import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("rediss://admin:s3cret@cache:6380/1", "rediss://admin:***@cache:6380/1"),
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        (
            "redis://cache/0?username=admin&password=s3cret&db=2",
            "redis://cache/0?username=admin&password=***&db=2",
        ),
        # An `@` in a query password is not the end of user info.
        ("redis://cache/0?Password=s3@cret", "redis://cache/0?Password=***"),
        ("redis://s3cret@cache:6379", "redis://***@cache:6379"),  # a token, not a user name
        ("http://qdrant:6333", "http://qdrant:6333"),
    ],
)
def test_redact_hides_the_password_of_a_url(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "cret" not in shown


def test_settings_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RAG_LLM_API_KEY": "sk-llm-hunter2",
        "RAG_EMBED_API_KEY": "sk-embed-hunter2",
        "RAG_QDRANT_API_KEY": "qdrant-key-hunter2",
        "RAG_REDIS_URL": "redis://:valkey-hunter2@cache:6379/0",
        "RAG_QDRANT_URL": "http://qdrant:6333/?password=qdrant-url-hunter2",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)

    for shown in (repr(settings), str(settings)):
        assert "hunter2" not in shown, shown
        assert "redis://***@cache:6379/0" in shown, "the rest of a URL is still shown"
    # Each is at hand where it is used.
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-llm-hunter2"
    assert settings.llm_configured


def test_a_stored_secret_is_its_owners_and_kept(tmp_path: Path) -> None:
    folder = private_folder(tmp_path / "data" / "valkey")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    path = folder / "password"
    first = stored_secret(path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stored_secret(path) == first, "the same secret on every start"
    assert [p.name for p in folder.iterdir()] == ["password"], "no partial file left"

    path.chmod(0o644)
    assert stored_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "a loosened secret file is closed again"

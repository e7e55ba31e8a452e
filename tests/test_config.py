from __future__ import annotations

from pathlib import Path

import pytest

from semsearch import Settings
from semsearch.config import default_cache_dir
from semsearch.errors import InvalidRequestError


def test_settings_from_env_parse_each_kind_of_field(tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={
            "SEMSEARCH_INDEX_DIR": str(tmp_path / "idx"),
            "SEMSEARCH_QUERY_BACKEND": "onnx-fp32",
            "SEMSEARCH_CACHE_DIR": str(tmp_path / "cache"),
            "SEMSEARCH_BATCH_SIZE": "16",
            "SEMSEARCH_PROGRESS": "yes",
            "SEMSEARCH_CORS_ORIGINS": "https://a.example, https://b.example",
            "SEMSEARCH_CHUNK_MAX_TOKENS": "128",
        }
    )
    assert settings.index_dir == tmp_path / "idx"
    assert settings.query_backend == "onnx-fp32"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.batch_size == 16 and settings.progress is True
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.chunking.max_tokens == 128


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"query_backend": "onnx"}, "query_backend must be one of auto, torch, onnx-fp32, onnx-int8"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_settings_are_rejected_with_a_clear_message(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Settings(**changes)  # type: ignore[arg-type]


def test_invalid_env_values_name_the_setting() -> None:
    with pytest.raises(InvalidRequestError, match="invalid value for setting batch_size"):
        Settings.from_env(environ={"SEMSEARCH_BATCH_SIZE": "many"})


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "semsearch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "semsearch"

from __future__ import annotations

import dataclasses
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
        (
            {"query_backend": "onnx"},
            "query_backend='onnx' is not valid: expected one of auto, torch, onnx-fp32, onnx-int8",
        ),
        ({"precision": "fp16"}, "precision='fp16' is not valid: expected one of auto, fp32, bf16"),
        ({"batch_size": 0}, "batch_size=0 is not valid: expected an integer >= 1"),
        ({"threads": 0}, "threads=0 is not valid: expected an integer >= 1"),
        ({"min_bf16_cosine": 1.5}, "min_bf16_cosine=1.5 is not valid: expected a number > 0 and <= 1"),
        ({"rate_limit": float("inf")}, "rate_limit=inf is not valid"),
        ({"threads": True}, "threads=True is not valid"),
        ({"api_keys": ("k1", " ")}, "api_keys must not contain an empty key"),
    ],
)
def test_invalid_settings_are_rejected_with_a_clear_message(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Settings(**changes)  # type: ignore[arg-type]


def test_invalid_env_values_name_the_setting() -> None:
    with pytest.raises(InvalidRequestError) as info:
        Settings.from_env(environ={"SEMSEARCH_BATCH_SIZE": "many"})
    assert info.value.message == "SEMSEARCH_BATCH_SIZE='many' is not valid: expected an integer >= 1"


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "semsearch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "semsearch"


def test_every_setting_is_parsed_by_its_declared_type(tmp_path: Path) -> None:
    """Each field from its SEMSEARCH_ variable, with the Python type the dataclass declares (the table is written
    by hand: a new field without a row here fails the test)."""
    raw_and_parsed = {
        "index_dir": (str(tmp_path / "ix"), tmp_path / "ix"),
        "model": ("some/model", "some/model"),
        "precision": ("bf16", "bf16"),
        "min_bf16_cosine": ("0.95", 0.95),
        "batch_size": ("8", 8),
        "threads": ("4", 4),
        "query_backend": ("torch", "torch"),
        "cache_dir": (str(tmp_path / "cache"), tmp_path / "cache"),
        "device": ("cpu", "cpu"),
        "allow_download": ("on", True),
        "exclude": ("NOTES*, DRAFT*", ("NOTES*", "DRAFT*")),
        "keep_versions": ("5", 5),
        "auto_merge": ("off", False),
        "merge_factor": ("4", 4),
        "ann_min_rows": ("5000", 5000),
        "progress": ("0", False),
        "admin_token": ("t0k3n", "t0k3n"),
        "cors_origins": ("https://a.example", ("https://a.example",)),
        "reload_check_seconds": ("2.5", 2.5),
        "api_keys": ("k1,k2", ("k1", "k2")),
        "rate_limit": ("12.5", 12.5),
        "rate_burst": ("30", 30),
        "max_body_bytes": ("1024", 1024),
        "rerank_model": ("cross-encoder/some-model", "cross-encoder/some-model"),
        "rerank_depth": ("50", 50),
    }
    environ = {f"SEMSEARCH_{name.upper()}": raw for name, (raw, _) in raw_and_parsed.items()}
    settings = Settings.from_env(environ=environ)
    for name, (_, parsed) in raw_and_parsed.items():
        value = getattr(settings, name)
        assert value == parsed and type(value) is type(parsed), name
    assert set(raw_and_parsed) | {"chunking"} == {f.name for f in dataclasses.fields(Settings)}
    chunking = Settings.from_env(environ={"SEMSEARCH_CHUNK_TITLE_CONTEXT": "false", "SEMSEARCH_CHUNK_MIN_CHARS": "80",
                                          "SEMSEARCH_CHUNK_BOILERPLATE_PATTERNS": "a,b\n^c"}).chunking  # fmt: skip
    assert (chunking.title_context, chunking.min_chars, chunking.boilerplate_patterns) == (False, 80, ("a,b", "^c"))


@pytest.mark.parametrize(
    ("name", "raw", "accepts"),
    [
        ("THREADS", "four", "an integer >= 1 (empty: the default)"),
        ("THREADS", "0", "an integer >= 1 (empty: the default)"),
        ("RELOAD_CHECK_SECONDS", "soon", "a number >= 0"),
        ("RELOAD_CHECK_SECONDS", "nan", "a number >= 0"),
        ("ALLOW_DOWNLOAD", "maybe", "true or false (also 1/0, yes/no, on/off)"),
        ("PRECISION", "fp16", "one of auto, fp32, bf16"),
        ("RATE_LIMIT", "-1", "a number > 0 (empty: the default)"),
        ("CHUNK_MIN_CHARS", "1.5", "an integer >= 0"),
        ("CHUNK_MAX_TOKENS", "4", "an integer >= 16 (empty: the default)"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(name: str, raw: str, accepts: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        Settings.from_env(environ={f"SEMSEARCH_{name}": raw})
    assert info.value.message == f"SEMSEARCH_{name}={raw!r} is not valid: expected {accepts}"


def test_a_misspelt_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env(environ={"SEMSEARCH_THRADS": "2"})
    assert settings.threads is None
    assert "ignoring SEMSEARCH_THRADS: semsearch has no such setting (did you mean SEMSEARCH_THREADS?)" in caplog.text


def test_secrets_stay_out_of_the_settings_repr() -> None:
    text = repr(Settings(admin_token="adm1n-s3cret", api_keys=("key-s3cret",)))
    assert "s3cret" not in text and "threads=None" in text


def test_an_empty_value_unsets_an_optional_setting() -> None:
    settings = Settings.from_env(environ={"SEMSEARCH_THREADS": "", "SEMSEARCH_ADMIN_TOKEN": "", "SEMSEARCH_MODEL": ""})
    assert (settings.threads, settings.admin_token, settings.model) == (None, None, None)


def test_an_empty_list_setting_is_an_empty_tuple() -> None:
    assert Settings.from_env(environ={"SEMSEARCH_EXCLUDE": ""}).exclude == ()

"""Typed errors. Each carries a stable machine-readable code and the HTTP status the API maps it to."""

from __future__ import annotations


class SemsearchError(Exception):
    """Base class for every error semsearch raises on purpose."""

    code = "semsearch_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequestError(SemsearchError):
    """The caller asked for something malformed (empty query, k out of range, bad filter...)."""

    code = "invalid_request"
    http_status = 400


class ConfigError(InvalidRequestError):
    """A setting has a value it does not accept (the message names the setting and what it accepts)."""

    code = "invalid_setting"


class NotFoundError(SemsearchError):
    code = "not_found"
    http_status = 404


class CursorNotFoundError(NotFoundError):
    """A paging cursor this server did not issue (malformed, or from another deployment)."""

    code = "cursor_not_found"


class CursorMismatchError(SemsearchError):
    """A paging cursor used with another search than the one that issued it."""

    code = "cursor_mismatch"
    http_status = 409


class CursorExpiredError(SemsearchError):
    """A paging cursor names an index version that is no longer kept on disk."""

    code = "cursor_expired"
    http_status = 410


class IndexNotFoundError(SemsearchError):
    """No published index exists at the given location."""

    code = "index_not_found"
    http_status = 503


class IndexCorruptError(SemsearchError):
    """An index directory exists but cannot be read (missing files, unknown format version)."""

    code = "index_corrupt"
    http_status = 503


class IndexMismatchError(SemsearchError):
    """The index was built with another model, dimension or format than the one in use."""

    code = "index_mismatch"
    http_status = 409


class IndexWriteError(SemsearchError):
    """The index could not be written (the disk or quota is full); the published version is left as it was."""

    code = "index_write_failed"
    http_status = 507


class IndexLockedError(SemsearchError):
    """Another writer holds the index lock."""

    code = "index_locked"
    http_status = 409


class SourceError(SemsearchError):
    """An input path given by the user does not exist or cannot be read at all."""

    code = "source_error"
    http_status = 400


class ModelLoadError(SemsearchError):
    """The embedding model could not be loaded (unknown name offline, broken files)."""

    code = "model_load_error"
    http_status = 500

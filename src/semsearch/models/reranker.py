"""The optional rerank stage: a cross-encoder reads the query and each of the best fused candidates together and
scores the pair. It is slower than the retrievers (one transformer pass per candidate) and usually more accurate,
so it only reorders the top ``rerank_depth`` candidates.

Any sentence-transformers ``CrossEncoder`` name or path works. None is bundled, so reranking is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..config import Settings
from ..errors import ModelLoadError
from .model_thread import ModelThread


class PairScorer(Protocol):
    """What reranking needs: one relevance score per (query, passage) pair, higher is better."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder``, run on its own model thread (as the embedder is: PyTorch's CPU
    thread team belongs to the calling thread, and one owner avoids teams fighting over the cores; the thread is
    restarted after a fork)."""

    def __init__(self, model: str, *, device: str = "cpu", allow_download: bool = False, batch_size: int = 32,
                 max_tokens: int | None = 512) -> None:  # fmt: skip
        self.name = model
        self._batch_size = batch_size
        self._worker = ModelThread(name="semsearch-reranker")
        self._worker.call(self._load, model, device, allow_download, max_tokens)

    def _load(self, model: str, device: str, allow_download: bool, max_tokens: int | None) -> None:
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self._model: Any = CrossEncoder(model, device=device, max_length=max_tokens,
                                            local_files_only=not allow_download)  # fmt: skip
        except Exception as exc:  # sentence-transformers raises many types (OSError, ValueError, HF errors)
            hint = "" if allow_download else " (downloads are off: pass a local path or allow_download)"
            raise ModelLoadError(f"cannot load rerank model {model!r}{hint}: {exc}") from exc
        labels = getattr(self._model, "num_labels", 1)
        if labels != 1:
            raise ModelLoadError(
                f"rerank model {model!r} has {labels} output labels; a reranker must give one relevance score"
            )

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float64)
        pairs = [(query, text) for text in passages]
        scores = self._worker.call(self._predict, pairs)
        return np.asarray(scores, dtype=np.float64).reshape(len(pairs))

    def _predict(self, pairs: list[tuple[str, str]]) -> Any:
        # Raw logits (no activation): the ranking is the same, and they are what the model was trained to order.
        return self._model.predict(pairs, batch_size=self._batch_size, activation_fn=_identity,
                                   convert_to_numpy=True, show_progress_bar=False)  # fmt: skip

    def close(self) -> None:
        self._worker.close()


def _identity(x: Any) -> Any:
    return x


def load_reranker(settings: Settings) -> CrossEncoderReranker | None:
    """The reranker ``settings`` name (``rerank_model``), or None when reranking is off."""
    if not settings.rerank_model:
        return None
    return CrossEncoderReranker(settings.rerank_model, device=settings.device, allow_download=settings.allow_download,
                                batch_size=settings.batch_size)  # fmt: skip

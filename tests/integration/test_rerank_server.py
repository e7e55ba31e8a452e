"""The rerank stage in a real ``semsearch serve``: the cross-encoder is loaded in the master before the workers
fork, and each worker runs it on its own model thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from ..retrieve.test_rerank import _save_cross_encoder
from .servers import running_server


def test_forked_workers_rerank_with_the_cross_encoder(sample_index: Path, model_cache: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = _save_cross_encoder(tmp_path / "cross-encoder")
    env = {"SEMSEARCH_RERANK_MODEL": str(model), "SEMSEARCH_RERANK_DEPTH": "8"}
    question = "Which architect was behind the new river bridge in Aldermouth?"
    with running_server(sample_index, tmp_path / "server", model_cache, env) as server:
        stats = requests.get(f"{server.base}/stats").json()
        assert stats["rerank_model"] == str(model) and stats["rerank_depth"] == 8
        answers = [requests.post(f"{server.base}/search", json={"query": question, "k": 8, "explain": True,
                                                                 "highlights": False}).json() for _ in range(6)]  # fmt: skip
    hits = answers[0]["hits"]
    scores = CrossEncoder(str(model), local_files_only=True).predict(
        [(question, f"{h['title']}\n{h['text']}") for h in hits], activation_fn=lambda x: x
    )
    for hit, score in zip(hits, scores, strict=True):
        assert hit["explanation"]["rerank_score"] == pytest.approx(float(score), abs=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(a["hits"] == hits for a in answers)  # whichever worker answers, the same ranking

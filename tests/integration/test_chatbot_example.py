"""The example chatbot backend answers sample-corpus questions with correct citations, offline."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from semsearch import Searcher, Settings

from ..conftest import ROOT, SAMPLE_CORPUS


@pytest.fixture(scope="module")
def chatbot():
    spec = importlib.util.spec_from_file_location("chatbot_backend", ROOT / "examples" / "chatbot_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_answers_with_correct_citations(chatbot, sample_index: Path, real_embedder) -> None:
    with Searcher.open(sample_index, Settings(), embedder=real_embedder) as searcher:
        client = chatbot.create_chat_app(searcher).test_client()
        cases = [
            ("Which architect designed the new river bridge in Aldermouth?", "local/aldermouth-tessel-crossing-opens.txt",
             "Saoirse Delaney"),
            ("How many tonnes of limestone boulders were placed on the reef?", "science/isla-carranca-reef-restoration.txt",
             "4,812 tonnes"),
            ("Who declined to engage with the US defense officials?", "world/russia-military-outreach.txt",
             "declined to engage"),
        ]  # fmt: skip
        for question, article_id, fact in cases:
            response = client.post("/chat", json={"question": question})
            assert response.status_code == 200
            data = response.get_json()
            assert fact in data["answer"], data["answer"]
            cited = {int(n) for n in re.findall(r"\[(\d+)\]", data["answer"])}
            citations = {c["number"]: c for c in data["citations"]}
            assert cited and cited <= set(citations)
            # The sentence carrying the fact is cited to the article that contains it, at the right offsets.
            sentence_citation = next(
                citations[int(n)] for s, n in re.findall(r"(.+?) \[(\d+)\]", data["answer"]) if fact in s
            )
            assert sentence_citation["article_id"] == article_id
            body = searcher.article(article_id).article.text
            assert fact in body[sentence_citation["start"] : sentence_citation["end"]]
        assert client.post("/chat", json={}).status_code == 400


def test_llm_plugs_in(chatbot, sample_index: Path, real_embedder) -> None:
    prompts: list[str] = []

    def fake_llm(prompt: str) -> str:
        prompts.append(prompt)
        return "stub answer [1]"

    with Searcher.open(sample_index, Settings(), embedder=real_embedder) as searcher:
        client = chatbot.create_chat_app(searcher, llm=fake_llm).test_client()
        data = client.post("/chat", json={"question": "Who won the cup final?"}).get_json()
    assert data["answer"] == "stub answer [1]"
    assert "Sources:\n[1] " in prompts[0] and prompts[0].endswith("Question: Who won the cup final?\nAnswer:")


def test_sample_corpus_is_what_the_example_indexes(chatbot) -> None:
    assert chatbot.SAMPLE == SAMPLE_CORPUS

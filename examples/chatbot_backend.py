#!/usr/bin/env python
"""A small chatbot backend that grounds its answers in semsearch, offline, on the bundled sample corpus.

    python examples/chatbot_backend.py [--port 8100] [--index-dir index]
    curl -s localhost:8100/chat -H 'Content-Type: application/json' -d '{"question": "Who designed the bridge?"}'

Without an LLM it answers extractively: the sentences of the retrieved context that best match the question,
each cited with its [n] marker, plus the citations (article, paragraph, offsets). To use an LLM, pass any callable
``prompt -> answer`` as ``llm`` to :func:`create_chat_app` (see ``build_prompt`` for the prompt it receives).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from semsearch import Context, Searcher, Settings, reindex
from semsearch.errors import SemsearchError
from semsearch.index.keyword import analyse
from semsearch.ingest.chunking import split_sentences

SAMPLE = Path(__file__).resolve().parent / "articles"
LLM = Callable[[str], str]


def build_prompt(question: str, context: Context) -> str:
    """The prompt an LLM would get: instructions, the numbered context, the question."""
    return (
        "Answer the question using only the numbered sources below. Cite sources as [n].\n"
        "If the sources do not contain the answer, say so.\n\n"
        f"Sources:\n{context.text}\n\nQuestion: {question}\nAnswer:"
    )


def extractive_answer(question: str, context: Context, max_sentences: int = 2) -> str:
    """The context sentences sharing the most (stemmed, non-stopword) terms with the question, cited [n]."""
    wanted = set(analyse(question))
    scored: list[tuple[float, int, str]] = []
    for block in re.split(r"\n\n(?=\[\d+\] )", context.text):
        match = re.match(r"\[(\d+)\] .*?: ", block)
        if not match:
            continue
        number, body = int(match.group(1)), block[match.end() :]
        for start, end in split_sentences(body):
            sentence = body[start:end]
            terms = set(analyse(sentence))
            overlap = len(wanted & terms) / (len(wanted) or 1)
            scored.append((overlap - 0.01 * number, number, sentence))  # ties: the better-ranked source
    best = sorted(scored, reverse=True)[:max_sentences]
    if not best or best[0][0] <= 0:
        return "I could not find this in the articles."
    return " ".join(f"{sentence} [{number}]" for _, number, sentence in best)


def create_chat_app(searcher: Searcher, llm: LLM | None = None, max_tokens: int = 600) -> Flask:
    app = Flask(__name__)

    @app.post("/chat")
    def chat() -> Any:
        body = request.get_json(silent=True)
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not question.strip():
            return jsonify({"error": {"code": "invalid_request", "message": "question is required"}}), 400
        try:
            context = searcher.context(question, max_tokens=max_tokens, k=6)
        except SemsearchError as exc:
            return jsonify(exc.to_dict()), exc.http_status
        answer = llm(build_prompt(question, context)) if llm is not None else extractive_answer(question, context)
        return jsonify({"question": question, "answer": answer, "citations": [c.to_dict() for c in context.citations]})

    return app


def open_sample_searcher(index_dir: Path) -> Searcher:
    """Index the sample corpus (first run; incremental after that) and open it."""
    settings = Settings(index_dir=index_dir)
    reindex([SAMPLE], index_dir, settings, wait_for_lock=True)
    return Searcher.open(index_dir, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--index-dir", type=Path, default=Path("index"))
    args = parser.parse_args()
    app = create_chat_app(open_sample_searcher(args.index_dir))
    app.run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()

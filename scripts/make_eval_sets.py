#!/usr/bin/env python
"""Build extra labelled retrieval sets in BEIR format (for scripts/ablation.py and ``semsearch eval``).

- ``bbc-headlines``: each bbc-news headline is a query; its relevant document is the article body, indexed
  *without* its headline (so the task is to recognise the story from its text, not to match the title).
- ``sample-questions``: the paraphrased questions of examples/articles/QUESTIONS.md over the sample corpus;
  written to share few words with the answers, so keyword matching is weak there.
- ``sample-passages``: the same questions at *passage* level: every passage of the sample corpus (as the default
  chunking cuts it) is a document, and the relevant one is the passage that holds the answer sentence. This is
  the RAG case: finding the article is not enough, the answer paragraph has to rank first.
- ``bbc-passages``: the same at scale: 60 questions (scripts/data/bbc_passage_questions.jsonl, 12 per bbc-news
  section, mostly not about the lede) over every passage of bbc-news (about 9,400). The questions paraphrase
  their answer paragraph the way a reader who has not seen it would ask; about half name a well-known entity.

    python scripts/make_eval_sets.py [--out bench-results/eval-sets]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BBC = ROOT.parent / "shared" / "datasets" / "bbc-news"
BBC_QUESTIONS = ROOT / "scripts" / "data" / "bbc_passage_questions.jsonl"


def write_beir(
    out: Path, corpus: list[dict[str, str]], queries: list[dict[str, str]], qrels: list[tuple[str, str]]
) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in corpus:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, doc in qrels:
            fh.write(f"{qid}\t{doc}\t1\n")


def write_passage_set(
    out: Path,
    articles: list[Any],
    queries: list[dict[str, str]],
    labelled: list[tuple[str, Any, str]],
    embedder: Any,
) -> None:
    """A passage-level set: every passage of ``articles`` (as the default chunking cuts it) is a document titled
    with its article's headline; a query's relevant documents are the passages that overlap its answer text
    (one, or two when a long paragraph was split inside the answer)."""
    from semsearch import ChunkSettings
    from semsearch.chunking import chunk_article

    passages = {a.id: chunk_article(a, ChunkSettings(), embedder.count_tokens, embedder.max_tokens) for a in articles}
    corpus = [
        {"_id": f"{a.id}#{p.ordinal}", "title": a.title, "text": p.text} for a in articles for p in passages[a.id]
    ]
    qrels = []
    for qid, article, answer in labelled:
        at = article.text.find(answer)
        if at < 0 or article.text.find(answer, at + 1) >= 0:
            raise SystemExit(f"{qid}: the answer must occur exactly once in {article.id}: {answer[:60]}")
        holding = [p for p in passages[article.id] if p.start < at + len(answer) and at < p.end]
        if not holding:
            raise SystemExit(f"{qid}: the answer is in no indexed passage of {article.id} (boilerplate?)")
        qrels.extend((qid, f"{article.id}#{p.ordinal}") for p in holding)
    write_beir(out, corpus, queries, qrels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "eval-sets")
    args = parser.parse_args()
    from semsearch import Settings
    from semsearch.articles import load_articles
    from semsearch.embedding import load_embedder

    if BBC.exists():
        articles = load_articles([BBC], exclude=Settings().exclude).articles
        write_beir(
            args.out / "bbc-headlines",
            [{"_id": a.id, "title": "", "text": a.text} for a in articles],
            [{"_id": f"q{i}", "text": a.title} for i, a in enumerate(articles)],
            [(f"q{i}", a.id) for i, a in enumerate(articles)],
        )
    else:
        print("bbc-news not found: skipping bbc-headlines", file=sys.stderr)

    sample = ROOT / "examples" / "articles"
    articles = load_articles([sample], exclude=Settings().exclude).articles
    text = (sample / "QUESTIONS.md").read_text(encoding="utf-8")
    found = re.findall(r"^- (.+?)\n\s+- File: (\S+)(?: \(id (\S+)\))?", text, re.MULTILINE)
    queries, qrels = [], []
    for i, (question, file, record_id) in enumerate(found):
        queries.append({"_id": f"s{i}", "text": question})
        qrels.append((f"s{i}", record_id or file))
    corpus = [{"_id": a.id, "title": a.title, "text": a.text} for a in articles]
    write_beir(args.out / "sample-questions", corpus, queries, qrels)

    answers = re.findall(r"^\s+- Answer: \"(.+?)\"$", text, re.MULTILINE)
    if len(answers) != len(found):
        raise SystemExit("QUESTIONS.md: every question needs a File and an Answer line")
    embedder = load_embedder(Settings())  # its tokenizer cuts the passages exactly as the index does
    by_id = {a.id: a for a in articles}
    labelled = [(qid, by_id[doc], answer) for (qid, doc), answer in zip(qrels, answers, strict=True)]
    write_passage_set(args.out / "sample-passages", articles, queries, labelled, embedder)
    counts = {"sample_questions": len(queries)}

    if BBC.exists():
        bbc = {a.id: a for a in load_articles([BBC], exclude=Settings().exclude).articles}
        questions = [json.loads(line) for line in BBC_QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
        queries = [{"_id": q["id"], "text": q["question"]} for q in questions]
        labelled = [(q["id"], bbc[q["file"]], q["answer"]) for q in questions]
        write_passage_set(args.out / "bbc-passages", list(bbc.values()), queries, labelled, embedder)
        counts["bbc_passages"] = len(queries)
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

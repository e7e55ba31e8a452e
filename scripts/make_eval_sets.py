#!/usr/bin/env python
"""Build extra labelled retrieval sets in BEIR format (for scripts/ablation.py and ``semsearch eval``).

- ``bbc-headlines``: each bbc-news headline is a query; its relevant document is the article body, indexed
  *without* its headline (so the task is to recognise the story from its text, not to match the title).
- ``sample-questions``: the paraphrased questions of examples/articles/QUESTIONS.md over the sample corpus;
  written to share few words with the answers, so keyword matching is weak there.
- ``sample-passages``: the same questions at *passage* level: the corpus is the sample articles, and the
  judgements name the passage that holds the answer sentence as ``<article id>#<ordinal>`` (as the default
  chunking cuts the article), so ``semsearch eval`` ranks passages of an article index. This is the RAG case:
  finding the article is not enough, the answer paragraph has to rank first.
- ``bbc-passages``: the same at scale: 60 questions (scripts/data/bbc_passage_questions.jsonl, 12 per bbc-news
  section, mostly not about the lede) over every passage of bbc-news (about 9,400). The questions paraphrase
  their answer paragraph the way a reader who has not seen it would ask; about half name a well-known entity.
- ``dict-defs``: a reverse dictionary, where keyword matching is weak: each query is the WordNet 3.0 gloss of a
  noun with one sense, and its relevant document is the same word's definition in Webster's 1913 dictionary
  (GCIDE), among 20,000 GCIDE definitions. Two independently written definitions of one concept: a paraphrase
  task with one short document per id, as in most BEIR sets. Built from Debian's ``wordnet-base`` and
  ``dict-gcide`` packages (``apt-get download``; skipped when they cannot be had). Definitions GCIDE took from
  WordNet are left out.
- ``dict-questions``: entity-style questions over single-passage documents, the kind where BM25 rewards
  documents that repeat a question's incidental words. Each document is a WordNet noun synset (title: its words;
  text: its gloss); each query asks "Which <hypernym> is <GCIDE definition>?" of a one-sense noun, so the class
  word appears in many glosses and the description is written independently of the answer's. 1,000 questions,
  5,000 documents, from the same Debian packages.

    python scripts/make_eval_sets.py [--out bench-results/eval-sets] [--debs DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
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
    """A passage-level set: the corpus is ``articles``; a query's relevant documents are the passages (as the
    default chunking cuts them, ``<article id>#<ordinal>``) that overlap its answer text (one, or two when a long
    paragraph was split inside the answer)."""
    from semsearch import ChunkSettings
    from semsearch.ingest.chunking import chunk_article

    passages = {a.id: chunk_article(a, ChunkSettings(), embedder.count_tokens, embedder.max_tokens) for a in articles}
    corpus = [{"_id": a.id, "title": a.title, "text": a.text} for a in articles]
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
    # The index must cut the articles read back from corpus.jsonl exactly as above, or the ordinals mislead.
    from semsearch.eval.beir import load_beir

    for article in load_beir(out).corpus.articles:
        again = chunk_article(article, ChunkSettings(), embedder.count_tokens, embedder.max_tokens)
        if [(p.start, p.end) for p in again] != [(p.start, p.end) for p in passages[article.id]]:
            raise SystemExit(f"{out}: {article.id} is chunked differently when read back")


DICT_PACKAGES = ("wordnet-base", "dict-gcide")
DICT_QUERIES, DICT_DOCS, DICT_SEED = 1000, 20000, 20261124
QUESTION_QUERIES, QUESTION_DOCS = 1000, 5000
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_GCIDE_SOURCE = re.compile(r"\[(1913 Webster|Webster 1913 Suppl\.|PJC|WordNet 1\.5|RN|Century Dict\.)[^\]]*\]")


def _unpacked_debs(debs: Path) -> Path | None:
    """Download and unpack the dictionary packages under ``debs`` (once); None when they cannot be had."""
    root = debs / "root"
    if (root / "usr/share/dictd/gcide.index").is_file() and (root / "usr/share/wordnet/data.noun").is_file():
        return root
    debs.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *DICT_PACKAGES], cwd=debs, check=True, capture_output=True)
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"dict-defs and dict-questions skipped: cannot get {', '.join(DICT_PACKAGES)} ({exc})", file=sys.stderr)
        return None
    return root


def _gcide_definition(word: str, block: str) -> tuple[str, bool] | None:
    """The first definition of a GCIDE entry as plain text, and whether the entry is a noun with one sense; None
    for an entry that does not parse, or whose definition GCIDE took from WordNet."""
    m = re.match(r"\s*(\S+) \\[^\\]*\\(.*)", block, re.S)
    if not m or m.group(1).lower() != word:
        return None
    head = re.match(r"\s*,?\s*(n\.|a\.|v\. [ti]\.|adv\.)", m.group(2))
    if not head:
        return None
    body = m.group(2)[head.end() :]
    one_noun = head.group(1) == "n." and not re.search(r"\n\s+2\. ", body)
    cut = _GCIDE_SOURCE.search(body)
    if not cut or cut.group(1).startswith("WordNet") or "Syn:" in body[: cut.start()]:
        return None
    body = body[: cut.start()]
    if re.match(r"[^\n]*\[", body):  # etymology: the first bracketed group
        body = re.sub(r"^[^\[\n]*?\[[^\]]*\]", "", body, count=1, flags=re.S)
    body = re.sub(r"^\s*;?\s*pl\.\s*\{[^}]*\}[^\n]*", "", body)
    body = re.sub(r"\([A-Z][a-z]+\.(?: [A-Z][a-z]+\.)?\)", "", body)  # field labels: (Geol.)
    body = re.sub(r"--[A-Z][\w. ]*\.?\s*$", "", body.strip())  # a quoted author
    body = re.sub(r"^\s*1\.\s*", "", body.strip())
    body = re.sub(r"\[[^\]]*\]", "", body.replace("{", "").replace("}", ""))
    body = re.sub(r"\s+", " ", body).strip(" ;,")
    if len(body.split()) < 5 or "\\" in body:
        return None
    return body, one_noun


@dataclass(frozen=True)
class _Dictionaries:
    gcide: dict[str, str]
    """Word -> the first definition of its GCIDE entry (entries GCIDE took from WordNet left out)."""
    one_sense: set[str]
    """Words whose GCIDE entry is a noun with one sense."""
    monosemous: set[str]
    """Nouns with one WordNet sense."""
    synsets: dict[str, tuple[list[str], list[str], str]]
    """WordNet noun synset offset -> (its words, its hypernyms' offsets, its gloss without examples)."""


def _dictionaries(root: Path) -> _Dictionaries:
    """GCIDE and WordNet 3.0 (nouns), parsed from the unpacked Debian packages under ``root``."""

    def number(text: str) -> int:
        value = 0
        for ch in text:
            value = value * 64 + _B64.index(ch)
        return value

    with gzip.open(root / "usr/share/dictd/gcide.dict.dz") as fh:
        data = fh.read()
    blocks: dict[str, list[str]] = {}
    for line in (root / "usr/share/dictd/gcide.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and re.fullmatch(r"[A-Za-z]+", parts[0]):
            start, length = number(parts[1]), number(parts[2])
            blocks.setdefault(parts[0].lower(), []).append(data[start : start + length].decode("utf-8", "replace"))
    gcide: dict[str, str] = {}
    one_sense: set[str] = set()
    for word, entries in blocks.items():
        parsed = [d for d in (_gcide_definition(word, b) for b in entries) if d]
        if parsed:
            gcide[word] = parsed[0][0]
            if len(parsed) == 1 and len(entries) == 1 and parsed[0][1]:
                one_sense.add(word)
    wordnet = root / "usr/share/wordnet"
    monosemous = set()
    for line in (wordnet / "index.noun").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not line.startswith(" ") and fields[0].isalpha() and int(fields[2]) == 1:
            monosemous.add(fields[0])
    synsets: dict[str, tuple[list[str], list[str], str]] = {}
    for line in (wordnet / "data.noun").read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):
            continue
        head, _, text = line.partition(" | ")
        fields = head.split()
        count = int(fields[3], 16)
        words = [fields[4 + 2 * i].lower() for i in range(count)]
        rest = fields[4 + 2 * count :]
        pointers = rest[1 : 1 + 4 * int(rest[0])]
        hypernyms = [pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i")]
        gloss = re.split(r';\s*"', text.strip())[0].strip(" ;")  # examples follow in quotes
        synsets[fields[0]] = (words, hypernyms, gloss)
    return _Dictionaries(gcide, one_sense, monosemous, synsets)


def write_dictionary_set(out: Path, dictionaries: _Dictionaries) -> int:
    """The ``dict-defs`` set (module docstring); the number of queries."""
    gcide, one_sense = dictionaries.gcide, dictionaries.one_sense
    gloss: dict[str, str] = {}
    for words, _, definition in dictionaries.synsets.values():
        for word in words:
            if word in dictionaries.monosemous:
                gloss[word] = definition
    usable = sorted(
        w for w in gloss
        if w in one_sense and len(gloss[w].split()) >= 4 and not re.search(rf"\b{w}", gloss[w], re.I)
    )  # fmt: skip
    rng = random.Random(DICT_SEED)
    words = rng.sample(usable, DICT_QUERIES)
    others = sorted(set(gcide) - set(words))
    docs = sorted(set(words) | set(rng.sample(others, DICT_DOCS - DICT_QUERIES)))
    write_beir(
        out,
        [{"_id": w, "title": w, "text": gcide[w]} for w in docs],
        [{"_id": f"q-{w}", "text": gloss[w]} for w in words],
        [(f"q-{w}", w) for w in words],
    )
    return len(words)


def write_dictionary_question_set(out: Path, dictionaries: _Dictionaries) -> int:
    """The ``dict-questions`` set (module docstring); the number of queries."""
    synsets, gcide = dictionaries.synsets, dictionaries.gcide
    usable = []
    for offset, (words, hypernyms, _) in sorted(synsets.items()):
        word = words[0]
        if not hypernyms or "_" in word or word not in dictionaries.monosemous or word not in dictionaries.one_sense:
            continue
        definition = gcide[word].split(". ")[0].rstrip(".")
        if re.search(rf"\b{word}", definition, re.I) or not 4 <= len(definition.split()) <= 25:
            continue
        if re.search(r"[?'\[\]]|\bSee\b|--", definition):  # cross-references and leftover markup
            continue
        kind = synsets[hypernyms[0]][0][0].replace("_", " ")
        usable.append((offset, f"Which {kind} is {definition[0].lower()}{definition[1:]}?"))
    rng = random.Random(DICT_SEED)
    picked = rng.sample(usable, QUESTION_QUERIES)
    chosen = {offset for offset, _ in picked}
    others = sorted(set(synsets) - chosen)
    docs = sorted(chosen | set(rng.sample(others, QUESTION_DOCS - len(chosen))))
    write_beir(
        out,
        [{"_id": o, "title": ", ".join(w.replace("_", " ") for w in synsets[o][0]), "text": synsets[o][2]}
         for o in docs],
        [{"_id": f"q-{o}", "text": question} for o, question in picked],
        [(f"q-{o}", o) for o, _ in picked],
    )  # fmt: skip
    return len(picked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "eval-sets")
    parser.add_argument(
        "--debs", type=Path, default=ROOT / "bench-results" / "debs",
        help="where the Debian packages for dict-defs are downloaded and unpacked",
    )  # fmt: skip
    args = parser.parse_args()
    from semsearch import Settings
    from semsearch.ingest.articles import load_articles
    from semsearch.models.embedding import load_embedder

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
    root = _unpacked_debs(args.debs)
    if root is not None:
        dictionaries = _dictionaries(root)
        counts["dict_defs"] = write_dictionary_set(args.out / "dict-defs", dictionaries)
        counts["dict_questions"] = write_dictionary_question_set(args.out / "dict-questions", dictionaries)
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

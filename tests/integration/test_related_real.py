"""Related articles with the real model: a story's follow-up ranks first among the sample corpus's 18 other
articles, and a syndicated copy of the story is left out."""

from __future__ import annotations

import shutil
from pathlib import Path

from semsearch import Searcher, Settings, build_index
from semsearch.models.embedding import SentenceTransformerEmbedder

from ..conftest import SAMPLE_CORPUS
from ..retrieve.test_related import FOLLOW_UP, QUAKE, _write


def test_the_follow_up_story_ranks_first(tmp_path: Path, real_embedder: SentenceTransformerEmbedder) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    _write(corpus, "quake.txt", "Earthquake destroys houses in Veloria", QUAKE)
    _write(corpus, "quake-copy.txt", "Earthquake destroys houses in Veloria", QUAKE,
           "\n\nThis story was syndicated from the wire service.")  # fmt: skip
    _write(corpus, "quake-followup.txt", "Veloria rebuilds a week after the earthquake", FOLLOW_UP)
    settings = Settings(index_dir=tmp_path / "index")
    build_index([corpus], settings.index_dir, settings, embedder=real_embedder)
    with Searcher.open(settings.index_dir, settings, embedder=real_embedder) as searcher:
        related = searcher.related("quake.txt", k=5)
        ids = [a.article_id for a in related]
        assert ids[0] == "quake-followup.txt", [(a.article_id, a.score) for a in related]
        assert "quake.txt" not in ids and "quake-copy.txt" not in ids
        # And from the follow-up's side, the original (or its copy: they are the same story) comes first.
        assert searcher.related("quake-followup.txt", k=1)[0].article_id in ("quake.txt", "quake-copy.txt")

"""semsearch: semantic search over articles, as a library.

from semsearch import Searcher, build_index

build_index(["examples/articles"], "index")
with Searcher.open("index") as searcher:
    for hit in searcher.search("who declined to talk to US defense officials?", k=5):
        print(hit.score, hit.title, hit.text)
"""

from .articles import Article, LoadReport, SkippedSource, load_articles
from .chunking import Passage
from .config import ChunkSettings, Settings
from .errors import (
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    SemsearchError,
    SourceError,
)
from .indexing import Index, IndexReport, build_index, reindex, rollback
from .search import Searcher, SearchHit

__version__ = "0.1.0"

__all__ = [
    "Article",
    "ChunkSettings",
    "Index",
    "IndexCorruptError",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReport",
    "InvalidRequestError",
    "LoadReport",
    "ModelLoadError",
    "NotFoundError",
    "Passage",
    "SearchHit",
    "Searcher",
    "SemsearchError",
    "Settings",
    "SkippedSource",
    "SourceError",
    "__version__",
    "build_index",
    "load_articles",
    "reindex",
    "rollback",
]

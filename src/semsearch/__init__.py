"""semsearch: semantic search over articles, as a library.

from semsearch import Searcher, build_index

build_index(["examples/articles"], "index")
with Searcher.open("index") as searcher:
    for hit in searcher.search("who declined to talk to US defense officials?", k=5):
        print(hit.score, hit.title, hit.text)
"""

from .config import ChunkSettings, Settings
from .errors import (
    ConfigError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexWriteError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    SemsearchError,
    SourceError,
)
from .index.build import Index, IndexReport, build_index, reindex, rollback
from .ingest.articles import Article, LoadReport, SkippedSource, load_articles
from .ingest.chunking import Passage
from .models.embedding import Embedder
from .retrieve.filters import SearchFilters
from .retrieve.paging import SearchPage
from .retrieve.recency import Recency
from .retrieve.results import ArticleHit, Citation, Context, Explanation, Highlight, SearchHit
from .retrieve.searcher import Searcher

__version__ = "0.1.0"

__all__ = [
    "Article",
    "ArticleHit",
    "ChunkSettings",
    "Citation",
    "ConfigError",
    "Context",
    "Embedder",
    "Explanation",
    "Highlight",
    "Index",
    "IndexCorruptError",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReport",
    "IndexWriteError",
    "InvalidRequestError",
    "LoadReport",
    "ModelLoadError",
    "NotFoundError",
    "Passage",
    "Recency",
    "SearchFilters",
    "SearchHit",
    "SearchPage",
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

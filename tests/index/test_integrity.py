"""A damaged file of the published version is a clear IndexCorruptError naming it (at open: the server starts and
says 503; on reload: the previous version keeps serving), never wrong results, a 500 or a crash."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from semsearch import Searcher, Settings, build_index, reindex
from semsearch.errors import IndexCorruptError
from semsearch.index import integrity
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion
from semsearch.serve.app import create_app

from ..conftest import _ARTICLES, FakeEmbedder, fixture_settings

SEGMENT_FILES = [
    "ids.npy",
    "article_keys.npy",
    "vectors.npy",
    "ann.faiss",
    "postings/rows.npy",
    "postings/tf.npy",
    "postings/doc_len.npy",
    "postings/indptr.npy",
    "postings/vocab.npy",
    "postings/vocab_keys.npy",
    "postings/vocab_offsets.npy",
    "postings/postings.json",
    "meta.sqlite",
    "segment.json",
]
VERSION_FILES = ["manifest.json", "deleted.npy"]
DAMAGE = ["truncate-empty", "truncate-half", "flip"]
QUERIES = ["who designed the bridge architect", "interest rates cut", "coral reef divers", "story 7 topic"]


def _write_corpus(root: Path, stories: range) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, title, paragraphs in _ARTICLES:
        (root / name).write_text(title + "\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
    for i in stories:
        (root / f"story{i}.txt").write_text(
            f"Story {i}\n\n"
            + "\n\n".join(
                f"Paragraph {j} of story {i} on topic {i % 7}: alpha{i} beta{j} and more words." for j in range(3)
            ),
            encoding="utf-8",
        )
    return root


def _settings(index_dir: Path) -> Settings:
    # 60 rows make the segment an IVF one, so ann.faiss exists.
    return fixture_settings(index_dir).with_(ann_min_rows=60, auto_merge=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index with one ANN segment and a version holding one deletion, built once for the module."""
    root = tmp_path_factory.mktemp("pristine")
    corpus = _write_corpus(root / "corpus", range(40))
    settings = _settings(root / "index")
    build_index([corpus], root / "index", settings, embedder=FakeEmbedder())
    (corpus / "story39.txt").unlink()  # a second version: the first segment less one article
    reindex([corpus], root / "index", settings, embedder=FakeEmbedder())
    return root / "index"


@pytest.fixture
def index_dir(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "index")
    return tmp_path / "index"


def _results(searcher: Searcher) -> list[list[tuple[int, float, str]]]:
    return [
        [(h.passage_id, round(h.score, 6), h.text) for h in searcher.search(q, k=5, mode=mode)]
        for q in QUERIES
        for mode in ("dense", "keyword", "hybrid")
    ]


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate-empty":
        data = bytearray()
    elif how == "truncate-half":
        data = data[: len(data) // 2]
    elif path.suffix == ".json" or path.name == "CURRENT":
        # A changed digit keeps the JSON (or the id) well formed: only a checksum tells.
        middle = len(data) // 2
        i = min((j for j, c in enumerate(data) if chr(c).isdigit()), key=lambda j: abs(j - middle))
        data[i] ^= 0x01
    else:
        data[len(data) * 3 // 4] ^= 0x01  # past any header: one bit of the data
    path.write_bytes(bytes(data))


def _file(index_dir: Path, name: str) -> Path:
    layout = IndexLayout(index_dir)
    if name == "CURRENT":
        return layout.current_file
    version = layout.current_path()
    if name in VERSION_FILES:
        return version / name
    segment = json.loads((version / "manifest.json").read_text())["segments"][0]
    return layout.segment_path(segment) / name


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("name", [*SEGMENT_FILES, *VERSION_FILES, "CURRENT"])
def test_a_damaged_file_fails_the_open_naming_it(index_dir: Path, name: str, how: str) -> None:
    path = _file(index_dir, name)
    damage(path, how)
    with pytest.raises(IndexCorruptError) as info:
        Searcher.open(index_dir, _settings(index_dir), embedder=FakeEmbedder())
    assert "CURRENT" in info.value.message if name == "CURRENT" else path.name in info.value.message
    if how.startswith("truncate") and name not in ("segment.json", "manifest.json", "CURRENT"):
        assert "bytes where" in info.value.message  # the size check, before any file is read


def test_an_undamaged_copy_opens_and_answers_as_the_original(pristine: Path, index_dir: Path) -> None:
    with (
        Searcher.open(pristine, _settings(pristine), embedder=FakeEmbedder()) as a,
        Searcher.open(index_dir, _settings(index_dir), embedder=FakeEmbedder()) as b,
    ):
        assert _results(a) == _results(b)


def test_a_corrupt_new_version_is_not_switched_to_and_the_old_one_keeps_serving(index_dir: Path) -> None:
    settings = _settings(index_dir).with_(reload_check_seconds=0.01)
    searcher = Searcher.open(index_dir, settings, embedder=FakeEmbedder())
    before, results = searcher.version.version_id, _results(searcher)
    corpus = _write_corpus(index_dir.parent / "corpus", range(41))
    reindex([corpus], index_dir, settings, embedder=FakeEmbedder())
    layout = IndexLayout(index_dir)
    newest = max(json.loads((layout.current_path() / "manifest.json").read_text())["segments"])
    new_segment = layout.segment_path(newest)
    damage(new_segment / "vectors.npy", "flip")

    with pytest.raises(IndexCorruptError, match=r"vectors\.npy"):
        searcher.reload()
    assert searcher.version.version_id == before
    assert searcher.last_reload_error is not None and "vectors.npy is damaged" in searcher.last_reload_error
    assert _results(searcher) == results

    # The background reload the server uses: the request path never fails, the error is recorded.
    searcher.last_reload_error = None
    searcher._failed_version = None
    time.sleep(0.02)
    assert searcher.maybe_reload(wait=False) is False
    deadline = time.monotonic() + 30
    while searcher.last_reload_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "vectors.npy is damaged" in (searcher.last_reload_error or "")
    assert searcher.version.version_id == before and _results(searcher) == results
    searcher.close()


def test_a_damaged_pointer_does_not_fail_requests_on_the_version_in_use(index_dir: Path) -> None:
    settings = _settings(index_dir).with_(reload_check_seconds=0.01)
    with Searcher.open(index_dir, settings, embedder=FakeEmbedder()) as searcher:
        results = _results(searcher)
        IndexLayout(index_dir).current_file.write_bytes(b"")
        time.sleep(0.02)
        assert searcher.maybe_reload(wait=False) is False
        assert "CURRENT is damaged" in (searcher.last_reload_error or "")
        assert _results(searcher) == results


def test_sqlite_damage_found_at_query_time_is_index_corrupt_not_a_crash(index_dir: Path) -> None:
    with Searcher.open(index_dir, _settings(index_dir), embedder=FakeEmbedder()) as searcher:
        # Damaged after the open verified it (and before the database was first read).
        meta = searcher.version.segments[0].path / "meta.sqlite"
        data = bytearray(meta.read_bytes())
        data[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)  # garbage over the first pages after the header page
        meta.write_bytes(bytes(data))
        with pytest.raises(IndexCorruptError, match=r"meta\.sqlite is damaged"):
            searcher.search("who designed the bridge architect", k=3)


def test_the_server_starts_on_a_damaged_index_and_says_why(index_dir: Path) -> None:
    damage(_file(index_dir, "postings/tf.npy"), "flip")
    app = create_app(_settings(index_dir), embedder=FakeEmbedder())
    app.config["TESTING"] = True
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "tf.npy is damaged" in ready.get_json()["error"]["message"]
    search = client.get("/search?q=bridge")
    assert search.status_code == 503 and search.is_json
    assert "tf.npy is damaged" in search.get_json()["error"]["message"]
    app.extensions["semsearch"].close()


def test_the_server_answers_503_not_500_when_metadata_is_found_damaged(index_dir: Path) -> None:
    app = create_app(_settings(index_dir), embedder=FakeEmbedder())
    app.config["TESTING"] = True
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    meta = app.extensions["semsearch"].searcher().version.segments[0].path / "meta.sqlite"
    data = bytearray(meta.read_bytes())
    data[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)
    meta.write_bytes(bytes(data))
    response = client.get("/search?q=who+designed+the+bridge")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "index_corrupt"
    app.extensions["semsearch"].close()


def _strip_checksums(index_dir: Path) -> None:
    layout = IndexLayout(index_dir)
    for path in [*layout.segments_dir.glob("*/segment.json"), *layout.versions_dir.glob("*/manifest.json")]:
        data = json.loads(path.read_text())
        data.pop("files")
        data.pop("checksum")
        path.write_text(json.dumps(data, indent=2))


def test_indexes_written_before_checksums_open_unverified(pristine: Path, index_dir: Path) -> None:
    _strip_checksums(index_dir)
    with (
        Searcher.open(pristine, _settings(pristine), embedder=FakeEmbedder()) as a,
        Searcher.open(index_dir, _settings(index_dir), embedder=FakeEmbedder()) as b,
    ):
        assert _results(a) == _results(b)
    # Sizes are still checked without checksums.
    damage(_file(index_dir, "meta.sqlite"), "truncate-half")
    with pytest.raises(IndexCorruptError, match=r"meta\.sqlite"):
        IndexVersion(IndexLayout(index_dir).current_path())


@pytest.mark.parametrize("key", ["files", "checksum"])
def test_a_record_missing_one_of_its_integrity_keys_is_damaged_not_old(index_dir: Path, key: str) -> None:
    path = _file(index_dir, "segment.json")
    data = json.loads(path.read_text())
    data[key + "_"] = data.pop(key)  # one damaged key name must not turn verification off
    path.write_text(json.dumps(data))
    with pytest.raises(IndexCorruptError, match=r"segment\.json is damaged"):
        IndexVersion(IndexLayout(index_dir).current_path())


def test_a_process_verifies_a_file_once_and_forked_children_inherit_that(
    index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(integrity, "_verified", {})
    monkeypatch.setattr(integrity, "_SETTLED_NS", -(10**18))  # the files were just written: trust them anyway
    hashed: list[str] = []
    checksum = integrity.file_checksum
    monkeypatch.setattr(integrity, "file_checksum", lambda path: hashed.append(path.name) or checksum(path))
    path = IndexLayout(index_dir).current_path()
    IndexVersion(path).close()
    assert "vectors.npy" in hashed and "meta.sqlite" in hashed
    hashed.clear()
    IndexVersion(path).close()
    assert hashed == []  # verified already in this process

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            integrity.file_checksum = lambda path: (_ for _ in ()).throw(AssertionError("hashed again"))
            IndexVersion(path).close()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    # A file changed since it was verified is verified again (and found damaged).
    damage(_file(index_dir, "vectors.npy"), "flip")
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy is damaged"):
        IndexVersion(path)

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch.cli import main
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion

from .conftest import FIXTURES


@pytest.fixture
def runner(use_fake_embedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(tmp_path / "index"))
    return CliRunner()


def test_index_then_search_then_info(runner: CliRunner, corpus_dir: Path) -> None:
    result = runner.invoke(main, ["index", str(corpus_dir)])
    assert result.exit_code == 0, result.output
    assert "3 articles" in result.output and "0 skipped" in result.output

    result = runner.invoke(main, ["search", "limestone boulders reef", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["hits"][0]["article_id"] == "reef.txt"
    assert len(data["hits"]) == 2

    result = runner.invoke(main, ["search", "limestone boulders reef"])
    assert "Reef restoration reaches milestone" in result.output

    result = runner.invoke(main, ["info", "--json"])
    info = json.loads(result.output)
    assert info["articles"] == 3 and info["model_id"] == "test/fake-bag-of-words"


def test_index_reports_skipped_files(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["index", str(FIXTURES / "formats"), "--index-dir", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "invalid JSON" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "anything"], "no index at"),
        (["info"], "no index at"),
        (["index", "/definitely/not/here"], "source not found"),
        (["eval", str(FIXTURES / "formats")], "not a BEIR dataset"),
    ],
)
def test_user_errors_are_one_line_and_non_zero(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_search_validates_k(runner: CliRunner, corpus_dir: Path) -> None:
    runner.invoke(main, ["index", str(corpus_dir)])
    result = runner.invoke(main, ["search", "reef", "-k", "0"])
    assert result.exit_code == 2 and "k must be between 1" in result.output


def test_eval_json_keys(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["eval", str(FIXTURES / "beir-mini"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"ndcg@10", "recall@100", "mrr@10", "queries", "passages", "index_seconds"} <= data.keys()


def test_eval_of_a_corpus_without_keyword_terms_reports_instead_of_crashing(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(json.dumps({"_id": "d", "title": "", "text": "x y z"}) + "\n")
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "x"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
    result = runner.invoke(main, ["eval", str(data), "--mode", "keyword", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ndcg@10"] == 0.0  # no term, so keyword search matches nothing
    dense = runner.invoke(main, ["eval", str(data), "--mode", "hybrid", "--json"])
    assert dense.exit_code == 0, dense.output
    assert json.loads(dense.output)["ndcg@10"] == 1.0  # hybrid falls back on the dense side


def test_serve_with_corpus_builds_the_index_first_then_updates_it_incrementally(
    runner: CliRunner, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import semsearch.serve.gunicorn

    served: list[Path] = []  # what the server was started on, and when (the server itself is tested elsewhere)

    def record(settings, **options):  # type: ignore[no-untyped-def]
        served.append(IndexLayout(settings.index_dir).current_path())

    monkeypatch.setattr(semsearch.serve.gunicorn, "serve", record)
    index_dir = tmp_path / "served"
    first = runner.invoke(main, ["serve", "--corpus", str(corpus_dir), "--index-dir", str(index_dir), "--dev"])
    assert first.exit_code == 0, first.output
    assert "3 articles" in first.output and "added 3" in first.output and "published version" in first.output
    assert len(served) == 1 and served[0].parent.parent == index_dir  # built before the server started

    again = runner.invoke(main, ["serve", "--corpus", str(corpus_dir), "--index-dir", str(index_dir), "--dev"])
    assert again.exit_code == 0 and "unchanged 3" in again.output and "published" not in again.output
    assert served[1] == served[0]  # nothing changed: the same version is served

    bridge = corpus_dir / "bridge.txt"
    bridge.write_text(bridge.read_text().replace("four years", "five years"), encoding="utf-8")
    third = runner.invoke(main, ["serve", "--corpus", str(corpus_dir), "--index-dir", str(index_dir), "--dev"])
    assert third.exit_code == 0, third.output
    assert "updated 1" in third.output and "unchanged 2" in third.output
    assert "passages embedded 1," in third.output  # only the edited paragraph
    assert served[2] != served[1]


def test_reindex_json_full_and_wait(runner: CliRunner, corpus_dir: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "ix"
    assert runner.invoke(main, ["index", str(corpus_dir), "--index-dir", str(index_dir)]).exit_code == 0
    (corpus_dir / "volcano.txt").write_text("Volcano erupts\n\nThe volcano erupted at dawn.", encoding="utf-8")

    result = runner.invoke(main, ["reindex", str(corpus_dir), "--index-dir", str(index_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["added"], report["unchanged"], report["full_rebuild"], report["published"]) == (1, 3, False, True)

    full = json.loads(runner.invoke(main, ["reindex", str(corpus_dir), "--index-dir", str(index_dir), "--full",
                                           "--json"]).output)  # fmt: skip
    assert full["full_rebuild"] is True and full["added"] == 4 and full["published"] is True
    assert full["version_id"] != report["version_id"]

    # Another writer holds the lock: without --wait the run is refused at once; with --wait it runs afterwards.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with IndexLayout(index_dir).writer_lock():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    refused = runner.invoke(main, ["reindex", str(corpus_dir), "--index-dir", str(index_dir)])
    assert refused.exit_code == 2 and "is being written by pid" in refused.output
    (corpus_dir / "volcano.txt").unlink()
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    waited = runner.invoke(main, ["reindex", str(corpus_dir), "--index-dir", str(index_dir), "--wait", "--json"])
    holder.join()
    assert waited.exit_code == 0, waited.output
    assert time.monotonic() - started >= 0.4 and json.loads(waited.output)["removed"] == 1


def test_exclude_and_boilerplate_patterns_come_from_the_environment(
    runner: CliRunner, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (corpus_dir / "NOTES.md").write_text("Editor notes\n\nRemember to check the reef figures.", encoding="utf-8")
    (corpus_dir / "README.md").write_text("Readme story\n\nThe readme describes the harbour ferry.", encoding="utf-8")
    bank = corpus_dir / "bank.txt"
    bank.write_text(bank.read_text() + "\nFollow us on Mastodon for more business news.\n", encoding="utf-8")
    default_dir, custom_dir = tmp_path / "default", tmp_path / "custom"

    assert runner.invoke(main, ["index", str(corpus_dir), "--index-dir", str(default_dir)]).exit_code == 0
    monkeypatch.setenv("SEMSEARCH_EXCLUDE", "NOTES*")
    monkeypatch.setenv("SEMSEARCH_CHUNK_BOILERPLATE_PATTERNS", "^follow us on\n^never matches$")
    assert runner.invoke(main, ["index", str(corpus_dir), "--index-dir", str(custom_dir)]).exit_code == 0

    def indexed(index_dir: Path) -> tuple[set[str], str]:
        version = IndexVersion(IndexLayout(index_dir).current_path())
        try:
            ids = set(version.article_hashes())
            stored = version.article("bank.txt")
            assert stored is not None
            return ids, "\n".join(p.text for p in stored.passages)
        finally:
            version.close()

    ids, bank_text = indexed(default_dir)
    assert ids == {"bank.txt", "bridge.txt", "reef.txt", "NOTES.md"}  # README* is excluded by default
    assert "Follow us on Mastodon" in bank_text and "All rights reserved" not in bank_text
    ids, bank_text = indexed(custom_dir)
    assert ids == {"bank.txt", "bridge.txt", "reef.txt", "README.md"}  # the list replaced the default one
    assert "Follow us on Mastodon" not in bank_text
    assert "All rights reserved" in bank_text  # the list replaced the default patterns


def test_optimize_info_and_upgrade(runner: CliRunner, corpus_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(main, ["index", str(corpus_dir)]).exit_code == 0
    (corpus_dir / "extra.txt").write_text("Extra story\n\nAn extra article about harbour ferries.", encoding="utf-8")
    (corpus_dir / "bank.txt").unlink()
    assert runner.invoke(main, ["reindex", str(corpus_dir)]).exit_code == 0
    info = json.loads(runner.invoke(main, ["info", "--json"]).output)
    assert len(info["segments"]) == 2 and info["deleted"] > 0 and info["bytes"] > 0
    assert [s["vector_index"] for s in info["segments"]] == ["flat", "flat"]
    assert info["dense_recall_at_10"] == 1.0
    text = runner.invoke(main, ["info"]).output
    assert "segments    2" in text and "recall@10 1.0" in text

    assert sum(s["deleted"] for s in info["segments"]) == info["deleted"]
    assert sum(s["rows"] for s in info["segments"]) - info["deleted"] == info["passages"]
    passages = info["passages"]

    result = runner.invoke(main, ["optimize", "--json"])
    assert result.exit_code == 0, result.output
    merged = json.loads(result.output)
    assert len(merged["merged"]) == 2 and merged["rows"] == passages and merged["purged"] == info["deleted"]
    info = json.loads(runner.invoke(main, ["info", "--json"]).output)
    assert len(info["segments"]) == 1 and info["deleted"] == 0 and info["articles"] == 3
    assert info["segments"][0]["deleted"] == 0 and info["version_id"] == merged["version_id"]
    assert "nothing to do" in runner.invoke(main, ["optimize"]).output
    (corpus_dir / "reef.txt").unlink()
    assert runner.invoke(main, ["reindex", str(corpus_dir)]).exit_code == 0
    result = runner.invoke(main, ["optimize"])
    assert result.exit_code == 0 and "merged 1 segments into one" in result.output, result.output

    # Upgrading an index that is already current is a one-line error.
    result = runner.invoke(main, ["upgrade"])
    assert result.exit_code == 2 and "already in format 2" in result.output


def test_upgrade_converts_a_format_1_index(runner: CliRunner, tmp_path: Path) -> None:
    import shutil

    from .conftest import ROOT

    index_dir = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "data" / "format1-index", index_dir)
    result = runner.invoke(main, ["search", "bridge", "--index-dir", str(index_dir)])
    assert result.exit_code != 0 and f"semsearch upgrade --index-dir {index_dir}" in result.output
    result = runner.invoke(main, ["upgrade", "--index-dir", str(index_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["from_format"] == 1
    result = runner.invoke(main, ["search", "who designed the bridge", "--index-dir", str(index_dir), "--json"])
    assert json.loads(result.output)["hits"][0]["article_id"] == "bridge.txt"


@pytest.mark.parametrize("args", [["serve"], ["search", "anything"], ["index", "."], ["info"]])
@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [("SEMSEARCH_THREADS", "four", "an integer >= 1"), ("SEMSEARCH_PRECISION", "fp16", "one of auto, fp32, bf16"),
     ("SEMSEARCH_AUTO_MERGE", "perhaps", "true or false (also 1/0, yes/no, on/off)")],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_the_variable(args: list[str], variable: str, value: str, accepts: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """The real command in a new process (``serve`` included): the error comes before any model or index is
    loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMSEARCH_")}
    env.update({variable: value, "SEMSEARCH_INDEX_DIR": str(tmp_path / "index")})
    run = subprocess.run([sys.executable, "-m", "semsearch.cli", *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: {variable}={value!r} is not valid: expected {accepts}" +
                                       (" (empty: the default)" if variable == "SEMSEARCH_THREADS" else "")]  # fmt: skip

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch.cli import main

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

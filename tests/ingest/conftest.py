"""The hostile ingestion corpus: good articles beside every kind of bad input a source directory can hold."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

SECRET = "zebracredential4417"
"""A word only the file outside the source root holds: it must never be indexed."""

HUGE_CHARS = 20 * 1024 * 1024
NESTING = 10_000


@dataclass(frozen=True)
class HostileCorpus:
    root: Path
    outside: Path
    good_ids: frozenset[str]
    """The ids of every good article (files, and records in the .jsonl/.csv files)."""
    skipped: dict[str, str]
    """Location (relative to root, ``name:line`` for a record) -> a phrase its skip reason must contain."""
    warned: dict[str, str]
    """Location -> a phrase of the warning about it (indexed, but not as written)."""


def _text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    """Built once per module (20 MB of it): tests must not change it."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    root = tmp_path / "corpus"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _text(outside / "secret.txt", f"Server credentials\n\nThe root password is {SECRET} for every host.\n")
    (outside / "more").mkdir()
    _text(outside / "more" / "other.txt", f"Other secret\n\nAlso {SECRET} here.\n")

    # Good articles, in every format.
    _text(root / "good" / "harbour.txt", "Harbour ferry adds night sailings\n\nThe ferry runs three extra sailings.\n")
    _text(root / "good" / "quantum.md", "# Quantum sensor startup\n\nA startup raised funds for gravity sensors.\n")
    _text(
        root / "good" / "page.html",
        "<html><head><title>Glacier retreat</title><script>var tracker = 'scriptleak';</script>"
        "<style>.x { color: stylecolour }</style></head><body><article><h1>Glacier retreat measured"
        "<script>document.title = 'headingscript'</script></h1><p>The glacier retreated forty metres."
        "<script>inlinescript()</script></p><noscript>noscriptleak</noscript></article></body></html>",
    )
    nested = (
        "<html><body><article><h1>Deep nesting survives</h1>"
        + "<div><blockquote>" * (NESTING // 2)
        + "<p>Lighthouse keepers counted seabirds.</p><script>deepscript()</script>"
        + "</blockquote></div>" * (NESTING // 2)
        + "<p>Nested page ends here.</p></article></body></html>"
    )
    _text(root / "good" / "nested.html", nested)
    # UTF-8 with two damaged bytes: indexed, the good characters kept, with a warning naming the file.
    (root / "good" / "damaged-utf8.txt").write_bytes(
        "Café owners’ ruling\n\nThe court’s décision on cafés ".encode() + b"\xff\xfe" + b" stands.\n"
    )

    # Records: good ones, malformed ones (per-line messages), and a duplicate id across files.
    (root / "records.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"id": "rec-good", "title": "Wind farm approved", "text": "The council approved turbines."}),
                '{"id": "rec-broken", "title": "Half',
                "[1, 2, 3]",
                "[" * 100_000,
                json.dumps({"id": "rec-no-text", "title": "No body"}),
                json.dumps({"id": "dup-1", "title": "Second copy", "text": "This copy comes second."}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (root / "records.csv").write_text(
        "id,title,text\n"
        "csv-good,Bakery reopens,The bakery on Mill Street reopened.\n"
        "csv-extra,Too many,fields,here\n"
        'csv-quote,Bad quote,"closed"then more\n'
        "dup-1,First copy,This copy comes first.\n"
        'csv-unclosed,Unclosed,"this quote never closes\n'
        "csv-after,Recovered row,The row after an unclosed quote is read.\n",
        encoding="utf-8",
    )

    # Files that are not articles.
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 16)
    (root / "control-bytes.txt").write_bytes(bytes(range(1, 32)) * 300)
    _text(root / "huge.txt", "Huge\n\n" + ("lorem " * (HUGE_CHARS // 6 + 1))[:HUGE_CHARS])
    os.mkfifo(root / "fifo.txt")

    # Symlinks: leaving the root (absolute, relative with .., a directory), loops, broken, and a harmless one.
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "leak.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    (root / "good" / "deeper-leak.txt").symlink_to(Path("..") / ".." / "outside" / "secret.txt")
    (root / "outside-dir").symlink_to(outside, target_is_directory=True)
    (root / "loop-a.txt").symlink_to("loop-b.txt")
    (root / "loop-b.txt").symlink_to("loop-a.txt")
    (root / "good" / "loop-dir").symlink_to("..", target_is_directory=True)
    (root / "broken.txt").symlink_to("nowhere.txt")
    (root / "good" / "alias.txt").symlink_to("harbour.txt")  # inside the root: read, under its own name

    return HostileCorpus(
        root=root,
        outside=outside,
        good_ids=frozenset(
            {
                "good/harbour.txt",
                "good/quantum.md",
                "good/page.html",
                "good/nested.html",
                "good/damaged-utf8.txt",
                "good/alias.txt",
                "rec-good",
                "csv-good",
                "dup-1",
                "csv-after",
            }
        ),
        skipped={
            "empty.txt": "empty file",
            "binary.txt": "binary file (contains NUL bytes)",
            "control-bytes.txt": "binary file (mostly control characters)",
            "huge.txt": "article too long (20,971,520 characters; the limit is 2,000,000)",
            "fifo.txt": "not a regular file (a FIFO)",
            "passwd.txt": "symlink leaves the source root (-> /etc/passwd)",
            "leak.txt": f"symlink leaves the source root (-> {(outside / 'secret.txt').resolve()})",
            "good/deeper-leak.txt": f"symlink leaves the source root (-> {(outside / 'secret.txt').resolve()})",
            "outside-dir": f"symlink leaves the source root (-> {outside.resolve()})",
            "loop-a.txt": "symlink loop",
            "loop-b.txt": "symlink loop",
            "good/loop-dir": "symlink loop: the link points to a directory that contains it",
            "broken.txt": "broken symlink (-> nowhere.txt)",
            "records.jsonl:2": "invalid JSON",
            "records.jsonl:3": "record is not a JSON object",
            "records.jsonl:4": "invalid JSON: nested too deeply",
            "records.jsonl:5": "record has no 'text'",
            "records.jsonl:6": "duplicate article id 'dup-1': skipped, the first one (from ",
            "records.csv:3": "row has more fields than the header",
            "records.csv:4": "CSV error: ',' expected after '\"'",
            "records.csv:6": "CSV error: unexpected end of data",
        },
        warned={"good/damaged-utf8.txt": "not valid UTF-8 (byte 0xff at offset"},
    )

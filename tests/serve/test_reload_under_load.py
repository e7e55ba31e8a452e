"""A reindex published while clients hammer the HTTP service: zero failed requests, and every response comes
from one complete published version."""

from __future__ import annotations

import threading
from pathlib import Path

import requests
from werkzeug.serving import make_server

from semsearch import Settings, build_index
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion
from semsearch.serve.app import create_app


def test_reindex_during_load_fails_no_request(corpus_dir: Path, settings: Settings, fake_embedder) -> None:
    settings = settings.with_(reload_check_seconds=0.0, keep_versions=10)
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    app = create_app(settings, embedder=fake_embedder)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    stop = threading.Event()
    failures: list[str] = []
    seen: list[tuple[str, list[str]]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set() or n < 20:
            n += 1
            response = session.get(f"{base}/search", params={"q": f"bridge reef bank volcano {i} {n}", "k": 20})
            if response.status_code != 200:
                with lock:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                continue
            data = response.json()
            with lock:
                seen.append((data["version"], [h["article_id"] for h in data["hits"]]))

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in clients:
        t.start()
    published = [IndexLayout(settings.index_dir).current_version()]
    try:
        for round_ in range(4):
            (corpus_dir / f"volcano-{round_}.txt").write_text(
                f"Volcano {round_} erupts\n\nThe volcano number {round_} erupted at dawn.", encoding="utf-8"
            )
            report = build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
            published.append(report.version_id)
    finally:
        stop.set()
        for t in clients:
            t.join()
        server.shutdown()
        app.extensions["semsearch"].close()

    assert failures == []
    versions = {v for v, _ in seen}
    assert versions <= set(published)
    assert len(versions) >= 2  # clients really saw the switch
    # Every response is consistent with exactly the version it names.
    layout = IndexLayout(settings.index_dir)
    articles: dict[str, set[str]] = {}
    passages: dict[str, int] = {}
    for version in versions:
        opened = IndexVersion(layout.version_path(version))
        articles[version] = set(opened.article_hashes())
        passages[version] = opened.manifest.passages
        opened.close()
    for version, hit_articles in seen:
        assert set(hit_articles) <= articles[version]
        assert len(hit_articles) == min(20, passages[version])

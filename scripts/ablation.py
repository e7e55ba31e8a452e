#!/usr/bin/env python
"""Retrieval-quality ablation: modes x fusions x title context x chunk size, on labelled BEIR-format sets.

On SciFact: dense / keyword / hybrid (each fusion), with and without title context, at two chunk sizes (the model
window of 256 word pieces, and 128). On the extra sets from scripts/make_eval_sets.py (bbc-headlines,
sample-questions): every mode and fusion at the default chunking. Each index is built once per chunking
configuration (kept under bench-results/ablation/ so reruns are incremental) and every mode is scored on it.
Prints one JSON object: a table of rows plus, per dataset, whether the default (hybrid/adaptive) is within 1% of
the better of dense and keyword.

    python scripts/ablation.py [--quick]      # --quick: SciFact default chunking only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
WORK = ROOT / "bench-results" / "ablation"
SETS = ROOT / "bench-results" / "eval-sets"

FUSION_GRID = [
    ("adaptive", None),
    ("adaptive", 0.7),
    ("adaptive", 1.0),
    ("zscore", 0.3),
    ("zscore", 0.5),
    ("rrf", None),
]


def run(dataset: Path, name: str, chunking_name: str, settings, rows: list[dict[str, object]]) -> None:
    from semsearch.evaluation import evaluate_beir

    index_dir = WORK / f"{name}-{chunking_name}"
    for mode in ("dense", "keyword"):
        report = evaluate_beir(dataset, settings, index_dir=index_dir, mode=mode)
        rows.append({"dataset": name, "chunking": chunking_name, "mode": mode, "fusion": None, "weight": None,
                     **report.to_dict()})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for fusion, weight in FUSION_GRID:
        report = evaluate_beir(
            dataset, settings, index_dir=index_dir, mode="hybrid", fusion=fusion, fusion_weight=weight
        )
        rows.append({"dataset": name, "chunking": chunking_name, "mode": "hybrid", "fusion": fusion, "weight": weight,
                     **report.to_dict()})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "ablation.json")
    args = parser.parse_args()
    from semsearch import ChunkSettings, Settings

    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    chunkings = {
        "title-256": ChunkSettings(),
        "notitle-256": ChunkSettings(title_context=False),
        "title-128": ChunkSettings(max_tokens=128),
        "notitle-128": ChunkSettings(title_context=False, max_tokens=128),
    }
    if args.quick:
        chunkings = {"title-256": chunkings["title-256"]}
    scifact = SHARED / "scifact"
    if scifact.exists():
        for chunking_name, chunking in chunkings.items():
            run(scifact, "scifact", chunking_name, Settings(chunking=chunking), rows)
    for name in ("bbc-headlines", "sample-questions"):
        if (SETS / name).exists() and not args.quick:
            run(SETS / name, name, "title-256", Settings(), rows)

    verdicts = {}
    for dataset in sorted({str(r["dataset"]) for r in rows}):
        for chunking in sorted({str(r["chunking"]) for r in rows if r["dataset"] == dataset}):
            sel = [r for r in rows if r["dataset"] == dataset and r["chunking"] == chunking]
            best_part = max(float(r["ndcg@10"]) for r in sel if r["mode"] in ("dense", "keyword"))  # type: ignore[arg-type]
            default = next(r for r in sel if r["fusion"] == "adaptive" and r["weight"] is None)
            verdicts[f"{dataset}/{chunking}"] = {
                "best_single_ndcg@10": best_part,
                "default_ndcg@10": default["ndcg@10"],
                "ratio": round(float(default["ndcg@10"]) / best_part, 4),  # type: ignore[arg-type]
                "within_1pct": float(default["ndcg@10"]) >= 0.99 * best_part,  # type: ignore[arg-type]
            }
    report = {"rows": rows, "default_vs_best_single": verdicts}
    text = json.dumps(report, indent=2)
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

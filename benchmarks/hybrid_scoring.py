"""Hybrid lexical + neural scoring against its two parts, through real trials.

Three rows per catalogue, nothing trains: TF-IDF alone (``tfidf_text``), the frozen packaged
MiniLM alone (``hf_text``, mean-pooled), and ``hybrid_text`` + ``hybrid_score``, whose lexical
weight w is chosen on dev by the trial's selection metric (dev_pair_ap for task pairs,
dev_ndcg@10 for matching). Catalogues: Walmart-Amazon pairs (the DeepMatcher layout; title alone
and [title, brand, modelno]) and the generated catalogue's same-product retrieval.

    python benchmarks/hybrid_scoring.py --data ../shared/data/em_walmart_amazon [--out FILE]

Prints one markdown table; docs/baselines.md quotes it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.config.schema import TrialConfig, TrialSpec  # noqa: E402
from bench.api.plugins import get_registry  # noqa: E402
from bench.trial.context import TrialContext  # noqa: E402
from bench.trial.run import run_trial  # noqa: E402

MINILM = {"model": "packaged:all-minilm-l6-v2", "pooling": "mean", "max_length": 32, "freeze": "all"}
TFIDF = {"analyzer": "char_wb", "ngram_range": [2, 4]}  # the encoder's defaults for the rest
METHODS = {
    "tfidf": ({"name": "tfidf_text", "options": TFIDF}, "text_only"),
    "minilm_frozen": ({"name": "hf_text", "options": MINILM}, "text_only"),
    "hybrid": ({"name": "hybrid_text", "options": {"lexical": TFIDF, "neural": MINILM}}, "hybrid_score"),
}


def catalogues(data: Path) -> dict[str, dict]:
    pairs = {"task": "pairs", "stages": [{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 32}],
             "metrics": ["pair_f1", "pair_ap", "dev_pair_ap"]}
    return {
        "walmart_amazon title": {**pairs, "dataset": {"name": "deepmatcher",
                                                      "options": {"path": str(data), "title": "title"}}},
        "walmart_amazon title+brand+modelno": {**pairs, "dataset": {"name": "deepmatcher", "options": {
            "path": str(data), "title": ["title", "brand", "modelno"]}}},
        "generated retrieval": {"task": "matching", "stages": [{"objectives": ["triplet"], "epochs": 1}],
                                "metrics": ["ndcg@10", "f1", "dev_ndcg@10"],
                                "dataset": {"name": "synthetic_catalog", "options": {"n_products": 500}}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/em_walmart_amazon"))
    parser.add_argument("--catalogue", action="append", help="only these catalogues (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/hybrid-scoring-latest.json"))
    args = parser.parse_args()
    ctx = TrialContext(registry=get_registry(), cpus=1, cache_dir=os.environ.get("MIC_BENCH_CACHE"))
    results = []
    for catalogue, spec in catalogues(args.data.resolve()).items():
        if args.catalogue and catalogue not in args.catalogue:
            continue
        for method, (encoder, fusion) in METHODS.items():
            cfg = {"dataset": spec["dataset"], "task": spec["task"], "encoders": {"text": encoder}, "fusion": fusion,
                   "stages": spec["stages"]}
            start = time.perf_counter()
            row = run_trial(TrialSpec(method, {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json")),
                            ctx).row
            if row["status"] != "ok":
                raise SystemExit(f"{catalogue} {method}: {row['error']}")
            found = {"catalogue": catalogue, "method": method, **{m: row.get(m) for m in spec["metrics"]},
                     "hybrid_weight": row.get("hybrid_weight"), "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(found), flush=True)
            results.append(found)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0],
                                    "results": results}, indent=1))
    metrics = ["pair_f1", "pair_ap", "dev_pair_ap", "ndcg@10", "f1", "dev_ndcg@10", "hybrid_weight", "seconds"]
    print("| catalogue | method | " + " | ".join(metrics) + " |\n|" + "---|" * (len(metrics) + 2))
    for r in results:
        print(f"| {r['catalogue']} | {r['method']} | " + " | ".join(
            "" if r.get(m) is None else f"{r[m]:.3f}" if isinstance(r[m], float) else str(r[m]) for m in metrics) + " |")


if __name__ == "__main__":
    main()

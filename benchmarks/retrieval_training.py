"""Does retrieval training beat the frozen encoder it starts from? Real trials, same split.

The packaged MiniLM was itself trained for sentence similarity, so a retrieval objective must at
least keep what it starts with. Rows per catalogue: the frozen MiniLM (nothing trains), then the
same encoder trained 4 epochs with each shipped retrieval objective (batch-hard ``triplet``,
``contrastive``, ``in_batch_negatives``), AdamW lr 5e-5 with warm-up and linear decay, P x K
batches of 32, the dev-best epoch (dev_ndcg@10) kept. Catalogues: the generated catalogue of
suites/same_product_retrieval.yaml, and Walmart-Amazon's records grouped by their matching pairs
(connected components of the label-1 pairs of every split; each record alone otherwise, a
distractor), split by group.

    python benchmarks/retrieval_training.py --data ../shared/data/em_walmart_amazon [--catalogue NAME ...]

Prints one markdown table; suites/same_product_retrieval.yaml and docs/baselines.md quote it.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import polars as pl  # noqa: E402

from bench.config.schema import TrialConfig, TrialSpec  # noqa: E402
from bench.api.plugins import get_registry  # noqa: E402
from bench.trial.context import TrialContext  # noqa: E402
from bench.trial.run import run_trial  # noqa: E402

MINILM = {"model": "packaged:all-minilm-l6-v2", "pooling": "mean", "max_length": 32}
TRAIN = {"name": "train", "epochs": 4, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 5.0e-5}}
METHODS = {
    "minilm_frozen": ({**MINILM, "freeze": "all"}, {"objectives": ["triplet"], "epochs": 1}),
    "triplet": (MINILM, {**TRAIN, "objectives": [{"name": "triplet", "options": {"margin": 1.0, "mining": "hard"}}]}),
    "contrastive": (MINILM, {**TRAIN, "objectives": ["contrastive"]}),
    "in_batch_negatives": (MINILM, {**TRAIN, "objectives": ["in_batch_negatives"]}),
}
METRICS = ["ndcg@10", "mar@10", "recall@1", "f1", "dev_ndcg@10", "best_epoch", "train_s"]


def walmart_amazon_groups(data: Path, folder: Path) -> Path:
    """Both tables as one CSV (id, title, group): a group per connected component of matches."""
    tables = {side: pl.read_csv(data / f"table{side.upper()}.csv", infer_schema_length=0) for side in ("a", "b")}
    ids = [f"{side}:{i}" for side, t in tables.items() for i in t["id"]]
    titles = [title or "" for t in tables.values() for title in t["title"]]
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for name in ("train", "valid", "test"):
        pairs = pl.read_csv(data / f"{name}.csv", infer_schema_length=0).filter(pl.col("label") == "1")
        for left, right in zip(pairs["ltable_id"], pairs["rtable_id"]):
            parent[root(f"a:{left}")] = root(f"b:{right}")
    path = folder / "walmart_amazon_groups.csv"
    pl.DataFrame({"id": ids, "title": titles, "group": [root(i) for i in ids]}).write_csv(path)
    return path


def catalogues(data: Path, folder: Path) -> dict[str, dict]:
    return {
        "generated": {"name": "synthetic_catalog", "options": {"n_products": 500}},
        "walmart_amazon groups": {"name": "table", "options": {
            "path": str(walmart_amazon_groups(data, folder)), "columns": {"id": "id", "title": "title", "group": "group"}}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/em_walmart_amazon"))
    parser.add_argument("--catalogue", action="append", help="only these catalogues (default: all)")
    parser.add_argument("--method", action="append", help="only these methods (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/retrieval-training-latest.json"))
    args = parser.parse_args()
    ctx = TrialContext(registry=get_registry(), cpus=1, cache_dir=os.environ.get("MIC_BENCH_CACHE"))
    results = []
    with tempfile.TemporaryDirectory(prefix="retrieval-training-") as folder:
        for catalogue, dataset in catalogues(args.data.resolve(), Path(folder)).items():
            if args.catalogue and catalogue not in args.catalogue:
                continue
            for method, (encoder, stage) in METHODS.items():
                if args.method and method not in args.method:
                    continue
                cfg = {"dataset": dataset, "task": "matching", "encoders": {"text": {"name": "hf_text", "options": encoder}},
                       "fusion": "text_only", "stages": [stage], "splits": {"seed": 0}, "eval": {"k": 10, "retrieval": "embedding"}}
                start = time.perf_counter()
                row = run_trial(TrialSpec(method, {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json")),
                                ctx).row
                if row["status"] != "ok":
                    raise SystemExit(f"{catalogue} {method}: {row['error']}")
                found = {"catalogue": catalogue, "method": method, **{m: row.get(m) for m in METRICS},
                         "n_train": row.get("n_train"), "n_test": row.get("n_test"),
                         "seconds": round(time.perf_counter() - start, 1)}
                print(json.dumps(found), flush=True)
                results.append(found)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0],
                                    "results": results}, indent=1))
    columns = METRICS + ["n_train", "n_test", "seconds"]
    print("| catalogue | method | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 2))
    for r in results:
        print(f"| {r['catalogue']} | {r['method']} | " + " | ".join(
            "" if r.get(m) is None else f"{r[m]:.3f}" if isinstance(r[m], float) else str(r[m]) for m in columns) + " |")


if __name__ == "__main__":
    main()

"""Measure the baselines' defaults on real and generated catalogues, through real trials.

The classic baselines must be at their honest best, or a leaderboard overrates whatever beats
them. Two defaults decide that:

- ``tfidf_text``: the vocabulary cap (``max_features``) and the document-frequency floor
  (``min_df``); every trial here scores by the cosine of the TF-IDF vectors, nothing trains;
- ``linear_probe``: the grid of C values chosen among on dev.

Catalogues: Walmart-Amazon pairs (a public entity-matching benchmark in the DeepMatcher layout)
with the title alone and with [title, brand, modelno] (test pair_f1 at the dev-best threshold,
pair_ap); its Amazon side as a classification catalogue (tableB.csv, label: category, categories
with 10+ items); the generated catalogue (same-product retrieval: ndcg@10, f1; classification:
macro-F1; and its labelled pairs). Each figure is a trial row's column, computed by the harness.

    python benchmarks/baseline_defaults.py --data ../shared/data/em_walmart_amazon [--part tfidf|probe|all]
        [--out benchmarks/baseline-defaults-latest.json]

Prints a markdown table per part; docs/baselines.md quotes them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.config.schema import TrialConfig, TrialSpec  # noqa: E402
from bench.api.plugins import get_registry  # noqa: E402
from bench.trial.context import TrialContext  # noqa: E402
from bench.trial.run import run_trial  # noqa: E402

TFIDF_SETTINGS = [(8192, 1), (8192, 2), (16384, 1), (16384, 2), (32768, 1), (32768, 2), (65536, 1), (65536, 2)]
C_VALUES = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
NOTHING_TRAINS = [{"objectives": ["pair_contrastive"], "epochs": 1, "batch_size": 32}]
MINILM = {"name": "hf_text", "options": {"model": "packaged:all-minilm-l6-v2", "pooling": "mean", "max_length": 32,
                                         "freeze": "all"}}


def tfidf(max_features: int, min_df: int) -> dict:
    return {"name": "tfidf_text", "options": {"analyzer": "char_wb", "ngram_range": [2, 4],
                                              "max_features": max_features, "min_df": min_df}}


def catalogues(data: Path) -> dict[str, dict]:
    """name -> (dataset, task, metrics, stages) of every catalogue a TF-IDF setting is scored on."""
    pairs = {"task": "pairs", "stages": NOTHING_TRAINS, "metrics": ["pair_f1", "pair_ap"]}
    return {
        "walmart_amazon title": {**pairs, "dataset": {"name": "deepmatcher",
                                                      "options": {"path": str(data), "title": "title"}}},
        "walmart_amazon title+brand+modelno": {**pairs, "dataset": {"name": "deepmatcher", "options": {
            "path": str(data), "title": ["title", "brand", "modelno"]}}},
        "generated pairs": {**pairs, "dataset": {"name": "synthetic_catalog",
                                                 "options": {"n_products": 160, "pairs": True, "pair_negatives": 2}}},
        "generated retrieval": {"task": "matching", "stages": [{"objectives": ["triplet"], "epochs": 1}],
                                "metrics": ["ndcg@10", "f1"],
                                "dataset": {"name": "synthetic_catalog", "options": {"n_products": 500}}},
    }


def classification_catalogues(data: Path) -> dict[str, dict]:
    return {
        "amazon categories": {"name": "table", "options": {
            "path": str(data / "tableB.csv"), "columns": {"id": "id", "title": "title", "label": "category"},
            "min_items_per_label": 10}},
        "generated categories": {"name": "synthetic_catalog", "options": {"n_products": 500}},
    }


def run(name: str, cfg: dict, ctx: TrialContext) -> dict:
    spec = TrialSpec(name, {}, {}, TrialConfig.model_validate(cfg).model_dump(mode="json"))
    start = time.perf_counter()
    row = run_trial(spec, ctx).row
    if row["status"] != "ok":
        raise SystemExit(f"{name}: {row['error']}")
    row["_seconds"] = round(time.perf_counter() - start, 1)
    return row


def tfidf_part(data: Path, ctx: TrialContext) -> list[dict]:
    results = []
    for catalogue, spec in catalogues(data).items():
        for max_features, min_df in TFIDF_SETTINGS:
            cfg = {"dataset": spec["dataset"], "task": spec["task"], "encoders": {"text": tfidf(max_features, min_df)},
                   "fusion": "text_only", "stages": spec["stages"], "cache": False}
            row = run(f"{catalogue} {max_features} {min_df}", cfg, ctx)
            found = {"catalogue": catalogue, "max_features": max_features, "min_df": min_df,
                     "vocabulary": row.get("tfidf_vocabulary"), "seconds": row["_seconds"],
                     **{m: row.get(m) for m in spec["metrics"]}}
            print(json.dumps(found), flush=True)
            results.append(found)
    return results


def probe_part(data: Path, ctx: TrialContext, tfidf_default: tuple[int, int]) -> list[dict]:
    """Test and dev macro-F1 of the linear probe at each C, on frozen MiniLM (standardised) and
    on TF-IDF (unstandardised: unit-length sparse vectors), per classification catalogue."""
    results = []
    features = {"minilm": ({"text": MINILM}, {}), "tfidf": ({"text": tfidf(*tfidf_default)}, {"standardize": False})}
    for catalogue, dataset in classification_catalogues(data).items():
        for feature, (encoders, options) in features.items():
            for c in C_VALUES:
                cfg = {"dataset": dataset, "task": "classification", "encoders": encoders,
                       "fusion": {"name": "linear_probe", "options": {**options, "C": c}},
                       "cache": feature == "minilm"}
                row = run(f"{catalogue} {feature} {c}", cfg, ctx)
                found = {"catalogue": catalogue, "features": feature, "C": c, "dev_macro_f1": row.get("dev_macro_f1"),
                         "macro_f1": row.get("macro_f1"), "accuracy": row.get("accuracy"),
                         "converged": row.get("linear_probe_converged"), "seconds": row["_seconds"]}
                print(json.dumps(found), flush=True)
                results.append(found)
    return results


def markdown(results: list[dict], key: str, columns: list[str]) -> str:
    lines = [f"| {key} | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for r in results:
        lines.append(f"| {r[key]} | " + " | ".join("" if r.get(c) is None else f"{r[c]:.4g}" if isinstance(r[c], float)
                                                 else str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/em_walmart_amazon"))
    parser.add_argument("--part", choices=["tfidf", "probe", "all"], default="all")
    parser.add_argument("--probe-tfidf", default="65536,2", help="max_features,min_df of the probe's TF-IDF features")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/baseline-defaults-latest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baseline-defaults-") as cache:
        ctx = TrialContext(registry=get_registry(), cpus=1, cache_dir=os.environ.get("MIC_BENCH_CACHE", cache))
        out = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "load": os.getloadavg()[0]}
        if args.part in ("tfidf", "all"):
            out["tfidf"] = tfidf_part(args.data.resolve(), ctx)
        if args.part in ("probe", "all"):
            max_features, min_df = (int(v) for v in args.probe_tfidf.split(","))
            out["probe"] = probe_part(args.data.resolve(), ctx, (max_features, min_df))
    args.out.write_text(json.dumps(out, indent=1))
    for part in ("tfidf", "probe"):
        if part in out:
            print(markdown(out[part], "catalogue", [c for c in out[part][0] if c != "catalogue"]))


if __name__ == "__main__":
    main()

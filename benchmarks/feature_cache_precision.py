"""What storing frozen-encoder sequences in half precision saves, and what it changes.

    python benchmarks/feature_cache_precision.py                  # 1,000 products (~5 min on 2 busy cores)
    python benchmarks/feature_cache_precision.py --products 200 --epochs 1   # a smoke check

One trial over frozen packaged encoders (MiniLM text, EfficientNet-Lite0 image at 64 px, as in
suites/mic_fusion.yaml but both frozen) and a fusion that reads token sequences, run with the
same seed from feature entries whose sequences are stored as float32, float16 (what the cache
writes) and bfloat16. Each run fills its own tensor folder, so the encoders run once per precision
and the training reads the cache. A second float32 run checks that the trial is deterministic,
so any metric difference comes from the stored precision. Prints JSON: feature entry bytes per
precision, the largest absolute and relative difference of the stored sequences from float32,
and each run's metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

METRICS = ("accuracy", "macro_f1", "top5_accuracy", "ndcg@10")


def trial_config(products: int, epochs: int, fusion: str) -> dict:
    return {
        "dataset": {"name": "synthetic_catalog", "options": {"n_products": products}},
        "encoders": {
            "text": {"name": "hf_text", "options": {"model": "packaged:all-minilm-l6-v2", "max_length": 24,
                                                    "freeze": "all"}},
            "image": {"name": "timm_image", "options": {"model": "tf_efficientnet_lite0", "img_size": 64,
                                                        "pretrained": "package:efficientnet-lite0", "freeze": "all"}},
        },
        "fusion": fusion,
        "stages": [{"name": "head", "objectives": ["cross_entropy"], "epochs": epochs, "batch_size": 32,
                    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}}],
        "cache": True,
        "seed": 0,
    }


def run(config: dict, cache_dir: Path, store_as) -> dict:
    """One trial; ``store_as`` replaces the cache's choice of sequence dtype for this run only."""
    import bench.trial.inputs as trial_inputs
    from bench.api.plugins import get_registry
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialConfig, TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    chosen = trial_inputs.half_if_fits
    trial_inputs.half_if_fits = store_as
    try:
        cfg = TrialConfig.model_validate(config).model_dump(mode="json")
        row = run_trial(TrialSpec(trial_key(cfg), {}, {}, cfg),
                        TrialContext(registry=get_registry(), cache_dir=str(cache_dir))).row
    finally:
        trial_inputs.half_if_fits = chosen
    assert row["status"] == "ok", row["error"]
    return row


def feature_entries(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    out = {}
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            if "cached_pooled" in f.keys():
                out[path.name] = {name: f.get_tensor(name) for name in f.keys()}
    return out


def entry_bytes(folder: Path) -> int:
    return sum((p.stat().st_size for p in folder.rglob("*.safetensors") if p.name in feature_entries(folder)), 0)


def main() -> None:
    from bench.trial.inputs import half_if_fits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fusion", default="cross_modal_gated_attention", help="a fusion that reads sequences")
    args = parser.parse_args()
    load_start = os.getloadavg()
    config = trial_config(args.products, args.epochs, args.fusion)
    precisions = {"float32": lambda t: t.float(), "float16": half_if_fits, "bfloat16": lambda t: t.bfloat16()}
    rows, entries, sizes = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for name, store_as in [*precisions.items(), ("float32_again", precisions["float32"])]:
            folder = cache / f"tensors_{name}"
            if name == "float32_again":
                shutil.move(str(cache / "tensors_float32"), str(cache / "tensors"))  # warm: reads, never encodes
            rows[name] = run(config, cache, store_as)
            shutil.move(str(cache / "tensors"), str(folder if name != "float32_again" else cache / "tensors_float32"))
            if name != "float32_again":
                entries[name] = feature_entries(folder)
                sizes[name] = entry_bytes(folder)
    reference = entries["float32"]
    differences = {}
    for name in ("float16", "bfloat16"):
        worst_abs = worst_rel = 0.0
        for key, tensors in entries[name].items():
            exact, stored = reference[key]["cached_sequence"], tensors["cached_sequence"].float()
            real = reference[key]["cached_mask"].bool().unsqueeze(-1).expand_as(exact)
            diff = (stored - exact).abs()[real]
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float((diff / exact[real].abs().clamp(min=1e-6)).max()))
            assert torch.equal(tensors["cached_pooled"], reference[key]["cached_pooled"])
        differences[name] = {"sequence_max_abs_diff": worst_abs, "sequence_max_rel_diff": worst_rel,
                             "stored_dtypes": sorted({str(t["cached_sequence"].dtype) for t in entries[name].values()})}
    result = {
        "setup": {"products": args.products, "epochs": args.epochs, "fusion": args.fusion,
                  "items": {s: rows["float32"].get(f"n_{s}") for s in ("train", "dev", "test")}},
        "feature_entry_bytes": sizes,
        "size_ratio_float16_over_float32": round(sizes["float16"] / sizes["float32"], 3),
        "stored_value_differences": differences,
        "metrics": {name: {m: row.get(m) for m in METRICS} for name, row in rows.items()},
        "cache": {name: {"hits": row["cache_hits"], "misses": row["cache_misses"]} for name, row in rows.items()},
        "load_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

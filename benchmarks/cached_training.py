"""In-process measurements behind two of ratios.py's figures, each run in its own process:

- ``warm_trials``: per fusion, the harness's training on cached frozen features (``TrialRun.train``,
  its ``train_s``) against a plain torch loop over the same cached tensors with the same fusion head
  (same initial weights), objective, optimizer groups, schedule, epochs and batch size.
- ``feature_build``: the frozen image features of N catalogue images through the harness
  (``TrialInputs.features`` into an empty cache) against a plain loop (PIL decode, the encoder's
  eval transform, timm forward in batches), with the largest difference between the two.

Both print one JSON line; ratios.py calls them as ``python benchmarks/cached_training.py KIND PLAN``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def plain_train(fusion, tables: dict, labels, stage, seed: int) -> tuple[float, int, int]:
    """A hand-written loop: shuffled index batches, rows taken from the cached tensors, the fusion
    forward, cross-entropy on every logits head, AdamW with the stage's lr, schedule and clipping."""
    import torch
    import torch.nn.functional as F

    from bench.api.interfaces import EncoderOutput
    from bench.trial.schedules import lr_factor

    fusion.train()
    params = [p for p in fusion.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params, "lr": stage.optimizer.head_lr or stage.optimizer.lr}],
                                  weight_decay=stage.optimizer.weight_decay)
    n, bs = len(labels), stage.batch_size
    steps_per_epoch = n // bs if n > bs else 1
    total = max(1, math.ceil(stage.epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(stage.schedule, total))
    generator = torch.Generator().manual_seed(seed)
    step = samples = 0
    start = time.perf_counter()
    while step < total:
        order = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            rows = order[b * bs:(b + 1) * bs]
            outputs = {}
            for m, t in tables.items():
                pooled = t["cached_pooled"].index_select(0, rows)
                if "cached_sequence" in t:
                    seq = t["cached_sequence"].index_select(0, rows).float()
                    mask = t["cached_mask"].index_select(0, rows).bool()
                else:
                    seq, mask = pooled.unsqueeze(1), pooled.new_ones(len(rows), 1).bool()
                outputs[m] = EncoderOutput(seq, mask, pooled, {})
            out = fusion(outputs)
            y = labels.index_select(0, rows)
            parts = out.logits_parts or [out.logits]
            loss = torch.stack([F.cross_entropy(p, y) for p in parts]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if stage.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            samples += len(rows)
            if step >= total:
                break
    return time.perf_counter() - start, step, samples


def warm_trials(plan: dict) -> dict:
    """plan: suite (path), cache (folder with warm features), fusions, cpus, repeats, min_seconds.

    Each fusion's pair (harness, then plain) runs ``repeats`` times, and more (up to 30) until
    the harness side has trained ``min_seconds`` in all: a sub-second trial is timed many times,
    since another process taking the core for a moment moves one timing by tens of percent."""
    import torch

    from bench.trial.device import set_threads
    from bench.api.plugins import get_registry
    from bench.config.schema import TrialConfig
    from bench.config.suite import load_suite
    from bench.trial.context import TrialContext
    from bench.trial.prepare import prepare_data
    from bench.trial.prepare import seed_everything
    from bench.trial.session import open_trial

    registry = get_registry()
    specs = {s.axes.get("fusion"): s for s in load_suite(plan["suite"], registry).trials
             if s.config.get("seed", 0) == 0}
    ctx = TrialContext(registry=registry, cpus=plan["cpus"], cache_dir=plan["cache"])
    threads = set_threads(plan["cpus"])
    out = {"threads": threads, "torch_threads": torch.get_num_threads(), "per_fusion": {}}
    for fusion_name in plan["fusions"]:
        cfg = TrialConfig.model_validate(specs[fusion_name].config)
        stage = cfg.stages[0]
        if len(cfg.stages) != 1 or stage.objectives[0].name != "cross_entropy" or len(stage.objectives) != 1:
            raise SystemExit(f"{fusion_name}: the plain loop only mirrors one cross_entropy stage")
        timings = {"harness_train_s": [], "plain_train_s": [], "load": [load()]}
        while len(timings["harness_train_s"]) < plan["repeats"] or (
                sum(timings["harness_train_s"]) < plan.get("min_seconds", 0) and len(timings["harness_train_s"]) < 30):
            # harness then plain, back to back, same process state
            seed_everything(cfg.seed)
            run = open_trial(cfg, ctx)
            data = run.data
            initial = copy.deepcopy(run.model.fusion.state_dict())
            before = run.inputs.store.misses
            cpu, wall = time.process_time(), time.perf_counter()
            run.train()
            # CPU seconds of this process per wall second: above the trial's CPUs = oversubscribed threads
            timings.setdefault("harness_cpu_over_wall", []).append(
                round((time.process_time() - cpu) / (time.perf_counter() - wall), 3))
            if run.inputs.store.misses != before:
                raise SystemExit(f"{fusion_name}: the feature cache was not warm ({run.inputs.store.misses} misses)")
            timings["harness_train_s"].append(round(run.train_seconds, 3))
            records = data.splits["train"]
            fusion = run.model.fusion
            tables = {m: run.inputs.features(m, run.model.encoders[m], records, fusion.uses_sequence).tensors
                      for m in sorted(fusion.requires)}
            labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
            fusion.load_state_dict(initial)
            seed_everything(cfg.seed)
            seconds, steps, samples = plain_train(fusion, tables, labels, stage, cfg.seed)
            if samples != run.train_samples:
                raise SystemExit(f"{fusion_name}: the harness trained {run.train_samples} samples, the plain loop "
                                 f"{samples} (early stopping? set selection.patience above the epochs)")
            timings["plain_train_s"].append(round(seconds, 3))
            timings["load"].append(load())
            timings["steps"] = steps
        harness, plain = min(timings["harness_train_s"]), min(timings["plain_train_s"])
        out["per_fusion"][fusion_name] = {"ratio": round(harness / plain, 3),
                                          "median_ratio": round(statistics.median(timings["harness_train_s"])
                                                                / statistics.median(timings["plain_train_s"]), 3),
                                          "repeats": len(timings["harness_train_s"]), **timings,
                                          "n_train": len(records), "batch_size": stage.batch_size,
                                          "epochs": stage.epochs}
    return out


def feature_build(plan: dict) -> dict:
    """plan: items (parquet), n, cpus, encoder (timm_image options), order, work (a scratch folder)."""
    import numpy as np
    import polars as pl
    import torch
    from PIL import Image

    from bench.trial.cache import CacheStore
    from bench.trial.device import set_threads
    from bench.api.interfaces import BuildContext
    from bench.api.plugins import get_registry
    from bench.trial.inputs import TrialInputs

    threads = set_threads(plan["cpus"])
    items = pl.read_parquet(plan["items"]).sort("item_id").head(plan["n"])
    records = [{"item_id": r["item_id"], "title": r["title"], "image": r["image"], "label": -1, "group": -1}
               for r in items.iter_rows(named=True)]
    encoder = get_registry().create("encoder", "timm_image", plan["encoder"], BuildContext(), field="image")
    encoder.eval()
    batch = 64

    def plain() -> torch.Tensor:
        pooled = []
        with torch.no_grad():
            for s in range(0, len(records), batch):
                pixels = torch.stack([encoder.images.transform(Image.open(r["image"]).convert("RGB"))
                                      for r in records[s:s + batch]])
                feats = encoder.model.forward_features(pixels)
                # a CNN's feature map averaged over positions; a ViT's class token
                pooled.append(feats.flatten(2).mean(2) if feats.dim() == 4 else feats[:, 0])
        return torch.cat(pooled)

    def harness() -> torch.Tensor:
        inputs = TrialInputs(CacheStore(tempfile.mkdtemp(prefix="feature-build-", dir=plan["work"])), "bench",
                             torch.device("cpu"),
                             "off", batch, cpus=plan["cpus"])
        return inputs.features("image", encoder, records, with_sequence=True).tensors["cached_pooled"]

    timings, results, loads = {}, {}, [load()]
    for name in plan["order"]:
        start = time.perf_counter()
        results[name] = {"harness": harness, "plain": plain}[name]()
        timings.setdefault(f"{name}_s", []).append(round(time.perf_counter() - start, 2))
        loads.append(load())
    diff = (results["harness"] - results["plain"]).abs()
    scale = results["plain"].abs().max()
    return {"n_images": len(records), "threads": threads, "batch_size": batch, **timings, "load": loads,
            "max_abs_diff_pooled": float(diff.max()), "max_abs_pooled": float(scale),
            "ratio": round(min(timings["harness_s"]) / min(timings["plain_s"]), 3),
            "image_px": int(np.asarray(Image.open(records[0]["image"])).shape[0])}


if __name__ == "__main__":
    kind, plan = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(json.dumps({"warm_trials": warm_trials, "feature_build": feature_build}[kind](plan)))

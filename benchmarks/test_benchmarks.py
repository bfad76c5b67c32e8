"""Micro-benchmarks of the harness's hot paths (pytest-benchmark; each runs in well under a second).

    python -m pytest benchmarks/ --benchmark-only

Each benchmark also checks its result, so a fast wrong answer fails.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.trial.cache import CacheStore, TensorTable
from bench.reporting.leaderboard import LeaderboardSpec, leaderboard_table, render_markdown
from bench.metrics.retrieval import retrieval_metrics
from ratios import AXES, synthetic_rows

N_GROUPS = 4 * 5 * 5 * 4  # every combination of the synthetic rows' axes


@pytest.fixture(scope="module")
def stored_rows():
    return synthetic_rows(10_000)


@pytest.fixture(scope="module")
def board_spec():
    return LeaderboardSpec(group_by=list(AXES), sort="macro_f1",
                           metrics=["accuracy", "macro_f1", "top5_accuracy", "ndcg@10"],
                           pivot={"rows": "fusion", "columns": "finetune_fraction", "value": "macro_f1"})


def test_leaderboard_render_10k_rows(benchmark, stored_rows, board_spec):
    text = benchmark(render_markdown, stored_rows, board_spec)
    ranked = [line for line in text.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert len(ranked) == N_GROUPS
    assert "## macro_f1 by fusion and finetune_fraction" in text and "## Failed trials" in text


def test_leaderboard_aggregation_10k_rows(benchmark, stored_rows, board_spec):
    table = benchmark(leaderboard_table, stored_rows, board_spec)
    assert table.height == N_GROUPS
    assert table["macro_f1"].is_sorted(descending=True, nulls_last=True)
    assert int(table["n"].sum() + table["failed"].sum()) == stored_rows.height


@pytest.fixture(scope="module")
def token_table():
    gen = torch.Generator().manual_seed(0)
    n, width = 10_000, 32
    lengths = torch.randint(4, width + 1, (n,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1000, 30000, (n, width), generator=gen) * mask
    return TensorTable([f"i{i}" for i in range(n)], {"input_ids": ids, "attention_mask": mask},
                       padded=("input_ids", "attention_mask"))


def test_tensor_table_batch_lookup(benchmark, token_table):
    records = [{"item_id": f"i{i}"} for i in range(0, 10_000, 157)][:64]
    batch = benchmark(token_table, records)
    rows = [int(r["item_id"][1:]) for r in records]
    longest = int(token_table.lengths[rows].max())
    assert batch["input_ids"].shape == (64, longest)
    assert torch.equal(batch["input_ids"], token_table.tensors["input_ids"][rows, :longest])


def _clustered_embeddings(n_items: int, dim: int = 128, seed: int = 0):
    """Listings of one product lie close together: retrieval must find them."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_items // 4), 4)[:n_items]
    centres = rng.normal(size=(groups.max() + 1, dim))
    emb = centres[groups] + 0.3 * rng.normal(size=(n_items, dim))
    return torch.tensor(emb, dtype=torch.float32), groups


def test_retrieval_metrics_2000_items(benchmark):
    emb, groups = _clustered_embeddings(2_000)
    metrics = benchmark(retrieval_metrics, emb, groups, 10, 0.5)
    assert metrics["ndcg@10"] > 0.95 and metrics["mar@10"] > 0.95
    assert 0.0 < metrics["f1"] <= 1.0


def test_validated_cache_read_of_frozen_features(benchmark, tmp_path):
    """A warm trial reads each feature entry once and re-checks its checksum."""
    store = CacheStore(tmp_path)
    gen = torch.Generator().manual_seed(0)
    features = {"cached_pooled": torch.randn(2_000, 384, generator=gen),
                "cached_sequence": torch.randn(2_000, 24, 384, generator=gen),
                "cached_mask": torch.ones(2_000, 24, dtype=torch.uint8)}
    store.write("bench-entry", features)
    read = benchmark(store.read, "bench-entry")
    assert read is not None and torch.equal(read["cached_sequence"], features["cached_sequence"])

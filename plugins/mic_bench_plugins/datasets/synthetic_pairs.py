"""Labelled pairs derived from the synthetic catalogue's products, so the pairs task runs offline.

Each product (group) goes to train, dev or test (60 / 20 / 20, seeded). A pair belongs to the
split of its first listing's product:
- matches: listings of one product, every two (at most ``max_matches`` per product);
- hard negatives: for each listing, the listing of another product of the same label whose
  title shares the most words with it (near-duplicates: one brand's line, one category);
- random negatives: ``negatives - 1`` listings of other products.
A pair drawn twice (in either order) is kept once, in the split that drew it first.
"""
from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from bench.data.pair_table import PAIR_SCHEMA

SPLIT_SHARES = (("train", 0.6), ("dev", 0.2), ("test", 0.2))


def _words(title: str) -> set[str]:
    return set(title.lower().split())


def derive_pairs(items: pl.DataFrame, *, negatives: int, max_matches: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed + 7919)
    ids, titles = items["item_id"].to_list(), items["title"].to_list()
    groups, labels = items["group"].to_list(), items["label"].to_list()
    products = sorted(set(groups))
    order = rng.permutation(len(products))
    cuts = np.cumsum([round(share * len(products)) for _, share in SPLIT_SHARES[:-1]])
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[products[idx]] = SPLIT_SHARES[int(np.searchsorted(cuts, rank, side="right"))][0]
    members: dict[str, list[int]] = {}
    by_label: dict[str, list[int]] = {}
    for i, (g, lab) in enumerate(zip(groups, labels)):
        members.setdefault(g, []).append(i)
        by_label.setdefault(lab, []).append(i)
    words = [_words(t) for t in titles]
    rows, seen = [], set()

    def add(a: int, b: int, label: int) -> None:
        key = (min(ids[a], ids[b]), max(ids[a], ids[b]))
        if a != b and key not in seen:
            seen.add(key)
            rows.append((ids[a], ids[b], label, split_of[groups[a]]))

    for g in products:
        combos = list(itertools.combinations(members[g], 2))
        for k in rng.permutation(len(combos))[:max_matches]:
            add(*combos[k], 1)
    for i in range(len(ids)):
        others = [j for j in by_label[labels[i]] if groups[j] != groups[i]]
        if others:
            overlap = [len(words[i] & words[j]) / max(1, len(words[i] | words[j])) for j in others]
            add(i, others[int(np.argmax(overlap))], 0)
        for _ in range(negatives - 1):
            j = int(rng.integers(len(ids)))
            if groups[j] != groups[i]:
                add(i, j, 0)
    return pl.DataFrame(rows, schema=PAIR_SCHEMA, orient="row")

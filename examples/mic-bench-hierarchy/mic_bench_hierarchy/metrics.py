"""Scores of predicted category paths against the true ones: per level of the tree, and hierarchical
precision / recall / F1. A path is a tuple of parts, top first: ("Home", "Kitchen", "Knives")."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.metrics.classification import macro_f1

Path = tuple[str, ...]
MAX_LEVELS = 4  # levels scored one by one (each adds two row columns)


def at_level(path: Path, level: int) -> Path:
    """The path cut to ``level`` parts; a shorter path stays whole (its deepest part stands for the level)."""
    return path[:level]


def level_metrics(true: Sequence[Path], pred: Sequence[Path], level: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the harness's: over the level's categories present among the true
    paths) of the predicted paths cut to ``level`` against the true ones cut the same way."""
    codes: dict[Path, int] = {}
    t = np.array([codes.setdefault(at_level(p, level), len(codes)) for p in true], dtype=np.int64)
    p = np.array([codes.setdefault(at_level(q, level), len(codes)) for q in pred], dtype=np.int64)
    return {f"level{level}_accuracy": float((t == p).mean()), f"level{level}_macro_f1": macro_f1(t, p)}


def common_depth(a: Path, b: Path) -> int:
    """How many leading parts two paths share: the size of the intersection of their ancestor sets."""
    depth = 0
    for x, y in zip(a, b):
        if x != y:
            break
        depth += 1
    return depth


def hierarchical_prf(true: Sequence[Path], pred: Sequence[Path]) -> dict[str, float]:
    """Kiritchenko et al. (2005): each path as the set of its prefixes (every ancestor and the path
    itself, not the root), micro-averaged over items: hP = sum |T & P| / sum |P|,
    hR = sum |T & P| / sum |T|, hF = 2 hP hR / (hP + hR) (0 when both are 0)."""
    shared = sum(common_depth(t, p) for t, p in zip(true, pred))
    precision = shared / sum(len(p) for p in pred)
    recall = shared / sum(len(t) for t in true)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"hier_precision": precision, "hier_recall": recall, "hier_f1": f1}

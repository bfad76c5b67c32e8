"""Every row metric declared once: name (or @k pattern), direction, aggregation, bootstrap, dtype, definition.

Leaderboards, ``bench compare``, ``bench check``, significance, trackers and docs/metrics.md read
these declarations instead of lists of their own, so a metric at any k (``ndcg@5`` with
``eval.k: 5``) is shown, compared and checked like any other. Declarations only: no torch, no
computation (the code of each metric is named in its family's module, see docs/metrics.md).

- ``direction``: "higher" or "lower" is better; "none" for figures that are not scores (a
  threshold, a count, a note).
- ``aggregation``: what one bootstrap resample draws: "item" (labelled test items), "query"
  (retrieval queries with a match; the row value is the mean of per-query values), "pair"
  (labelled test pairs), or "none" (not a statistic of test units: cost, thresholds, counts).
- ``bootstrap``: the stored test predictions hold what it takes to recompute the metric on a
  resample (bench/reporting/significance.py).
- A name ``dev_<metric>`` is ``<metric>`` measured on the dev split (``lookup`` resolves it),
  unless declared apart (``dev_pair_f1``).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

Direction = Literal["higher", "lower", "none"]
Aggregation = Literal["item", "query", "pair", "none"]
Kind = Literal["quality", "cost", "threshold", "count", "note"]
DEFAULT_K = 10  # eval.k when a suite does not set it


@dataclass(frozen=True)
class Metric:
    """One declared metric; ``lookup`` returns it resolved to a concrete ``name`` (and ``k``, ``split``)."""

    pattern: str  # the declared name; "{k}" stands for eval.k
    family: str  # classification, retrieval, pairs, cost
    kind: Kind
    direction: Direction
    aggregation: Aggregation
    bootstrap: bool
    dtype: Literal["float", "int", "str"]
    definition: str
    interval: bool = False  # leaderboards show its bootstrap interval by default
    leaderboard: bool = True  # a default leaderboard column (when the rows have it)
    split: Literal["test", "dev"] = "test"
    name: str = ""  # the concrete column name once resolved
    k: int | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    @property
    def gated_by_default(self) -> bool:
        """A headline metric (the ones leaderboards give intervals for): ``bench baseline`` gates it
        unless told which metrics to gate. The others (top-5, head/tail macro-F1, p@k ...) move
        with few test units or near a ceiling, where 4 seeds cannot tell noise from a drop."""
        return self.interval and self.split == "test"

    @property
    def is_score(self) -> bool:
        """A figure with a direction: can be ranked, compared and checked."""
        return self.direction != "none"

    def at(self, k: int = DEFAULT_K) -> str:
        """The column name at this k (the name itself for a metric without k)."""
        return self.pattern.replace("{k}", str(k))

    def matches(self, name: str) -> int | None | bool:
        """k when ``name`` is this metric at some k, None when it is this metric without k, False else."""
        found = _regex(self.pattern).fullmatch(name)
        if not found:
            return False
        return int(found.group(1)) if "{k}" in self.pattern else None


@lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(re.escape(pattern).replace(re.escape("{k}"), r"([1-9]\d*)"))


def _q(pattern, family, aggregation, definition, *, direction="higher", bootstrap=True, interval=False,
       leaderboard=True, split="test") -> Metric:
    return Metric(pattern, family, "quality", direction, aggregation, bootstrap, "float", definition,
                  interval=interval, leaderboard=leaderboard, split=split)


def _other(pattern, family, kind, dtype, definition, direction="none", leaderboard=False) -> Metric:
    return Metric(pattern, family, kind, direction, "none", False, dtype, definition, leaderboard=leaderboard)


MACRO_F1 = ("unweighted mean of per-label F1 over the labels present among the true labels "
            "(bench.metrics.classification.macro_f1)")

METRICS: list[Metric] = [
    # classification: bench/metrics/classification.py
    _q("accuracy", "classification", "item", "share of test items whose highest-scoring label is the true label",
       interval=True),
    _q("macro_f1", "classification", "item", MACRO_F1, interval=True),
    _q("top5_accuracy", "classification", "item", "share of test items whose true label is among the 5 highest-scoring"),
    _q("head_macro_f1", "classification", "item", "macro_f1 over the head labels (80% of training items) present in test",
       bootstrap=False),
    _q("tail_macro_f1", "classification", "item", "macro_f1 over the other labels present in test", bootstrap=False),
    # retrieval: bench/metrics/retrieval.py
    _q("ndcg@{k}", "retrieval", "query", "DCG@k / ideal DCG@k, mean over queries with a match", interval=True),
    _q("mar@{k}", "retrieval", "query", "recall@k: matches in the top k / R, mean over queries with a match",
       interval=True),
    _q("p@{k}", "retrieval", "query", "precision@k: matches in the top k / k, mean over queries with a match"),
    _q("map@{k}", "retrieval", "query", "AP@k normalised by R (trec_eval map_cut), mean over queries with a match",
       interval=True),
    _q("mrr@{k}", "retrieval", "query", "1 / rank of the first match within the top k (else 0), mean over queries"),
    _q("recall@1", "retrieval", "query", "1 when the most similar other item is a match, mean over queries"),
    _q("f1", "retrieval", "query", "threshold F1 at the dev-chosen similarity threshold, mean over queries with a match",
       interval=True),
    _q("f1_all", "retrieval", "query", "Shopee F1 (the query counts as its own match), mean over queries of known product"),
    _other("f1_threshold", "retrieval", "threshold", "float", "similarity threshold chosen on dev for f1 and f1_all"),
    _other("f1_note", "retrieval", "note", "str", "why f1, f1_all and f1_threshold are null"),
    _other("retrieval_note", "retrieval", "note", "str", "why every retrieval column is null"),
    # pairs: bench/metrics/pairs.py
    _q("pair_f1", "pairs", "pair", "F1 of the match class at the dev-chosen score threshold", interval=True),
    _q("pair_precision", "pairs", "pair", "precision of the match class at the dev-chosen score threshold"),
    _q("pair_recall", "pairs", "pair", "recall of the match class at the dev-chosen score threshold"),
    _q("pair_ap", "pairs", "pair", "average precision of the match class (scores tied within 1e-6 decided together)",
       interval=True),
    _q("dev_pair_f1", "pairs", "pair", "best F1 over the dev pairs at the threshold chosen on them (optimistic)",
       bootstrap=False, leaderboard=False, split="dev"),
    _other("pair_threshold", "pairs", "threshold", "float", "score threshold that maximises F1 on the dev pairs"),
    _other("pair_note", "pairs", "note", "str", "why a pair figure is null"),
    _other("n_test_pair_matches", "pairs", "count", "int", "test pairs labelled 1"),
    # cost: bench/trial/session.py
    _other("train_samples_per_s", "cost", "cost", "float", "training items (pairs) per second of training loops",
           direction="higher", leaderboard=True),
    _other("eval_samples_per_s", "cost", "cost", "float", "test items per second of test forward passes",
           direction="higher"),
    _other("train_s", "cost", "cost", "float", "seconds of the training loops of all stages", direction="lower"),
    _other("wall_s", "cost", "cost", "float", "seconds of the whole trial in its worker", direction="lower",
           leaderboard=True),
    _other("peak_mem_mb", "cost", "cost", "float", "peak resident memory of the worker, MiB", direction="lower",
           leaderboard=True),
    _other("gpu_peak_mem_mb", "cost", "cost", "float", "peak CUDA memory allocated by torch, MiB", direction="lower"),
    _other("n_params", "cost", "cost", "int", "parameters of fusion, encoders used and objectives' modules",
           direction="lower", leaderboard=True),
    _other("n_trainable_params", "cost", "cost", "int", "the part of n_params trainable at the end", direction="lower"),
    _other("selection_s", "cost", "cost", "float", "seconds of dev evaluations for model selection", direction="lower"),
]


def _check_declarations() -> None:
    seen = set()
    for m in METRICS:
        if m.pattern in seen:
            raise ValueError(f"metric {m.pattern!r} is declared twice in bench/metrics/registry.py")
        seen.add(m.pattern)
        if m.bootstrap and m.aggregation == "none":
            raise ValueError(f"metric {m.pattern!r}: a bootstrap needs an aggregation unit")


_check_declarations()


def declare(metrics, origin: str = "a plugin") -> None:
    """Add a task plugin's own metrics (``Task.metrics``) to the registry; a pattern that is already
    declared is refused unless it is the same declaration (a plugin loaded twice)."""
    for metric in metrics:
        if not isinstance(metric, Metric):
            raise TypeError(f"{origin} declares {metric!r}, not a bench.metrics.registry.Metric")
        same = [m for m in METRICS if m.pattern == metric.pattern]
        if same and same[0] != metric:
            raise ValueError(f"{origin} declares metric {metric.pattern!r}, which is already declared otherwise")
        if not same:
            METRICS.append(metric)
    _check_declarations()
    lookup.cache_clear()


def quality(pattern: str, family: str, aggregation: Aggregation, definition: str, **options) -> Metric:
    """A quality metric's declaration (the keyword options of ``Metric``), for ``Task.metrics``."""
    return _q(pattern, family, aggregation, definition, **options)


@lru_cache(maxsize=4096)
def lookup(name: str) -> Metric | None:
    """The metric a column name stands for, resolved (``name``, ``k``, ``split``); None if none is declared.

    ``ndcg@5`` resolves the ``ndcg@{k}`` pattern with k = 5; ``dev_macro_f1`` is ``macro_f1`` on dev.
    """
    if not isinstance(name, str):
        return None
    for m in METRICS:
        k = m.matches(name)
        if k is not False:
            return replace(m, name=name, k=k)
    if name.startswith("dev_"):
        inner = lookup(name[len("dev_"):])
        if inner is not None and inner.kind == "quality" and inner.split == "test":
            return replace(inner, name=name, split="dev", bootstrap=False, leaderboard=False, interval=False)
    return None


def require(name: str) -> Metric:
    """``lookup`` that raises, naming the closest declared metrics."""
    found = lookup(name)
    if found is None:
        from bench.errors import BenchError

        known = [m.at() for m in METRICS]
        close = difflib.get_close_matches(name, known, n=3)
        raise BenchError(f"unknown metric '{name}'", field="metric",
                         fix=f"did you mean {', '.join(close)}?" if close else f"use one of: {', '.join(known)}")
    return found


def list_metrics(family: str | None = None, kind: str | None = None) -> list[Metric]:
    """The declarations (unresolved), in declaration order, optionally of one family or kind."""
    return [m for m in METRICS if (family is None or m.family == family) and (kind is None or m.kind == kind)]


def quality_metrics(k: int = DEFAULT_K) -> list[str]:
    """The default test quality columns at this k, in leaderboard order."""
    return [m.at(k) for m in METRICS if m.kind == "quality" and m.leaderboard]


def cost_metrics(leaderboard_only: bool = True) -> list[str]:
    """Cost columns (the ones a leaderboard shows by default, or all)."""
    return [m.pattern for m in METRICS if m.kind == "cost" and (m.leaderboard or not leaderboard_only)]


def interval_metrics(k: int = DEFAULT_K) -> list[str]:
    """Metrics whose bootstrap interval leaderboards show by default, at this k."""
    return [m.at(k) for m in METRICS if m.interval]


def quality_columns(names) -> list[str]:
    """The default quality columns among ``names`` (any k), in leaderboard order, k ascending."""
    found = {}
    for name in names:
        m = lookup(name)
        if m is not None and m.kind == "quality" and m.leaderboard and m.split == "test":
            found[name] = (METRICS.index(next(d for d in METRICS if d.pattern == m.pattern)), m.k or 0)
    return sorted(found, key=found.__getitem__)


def is_quality(name: str) -> bool:
    m = lookup(name)
    return m is not None and m.kind == "quality"


def higher_is_better(name: str) -> bool:
    """True unless the metric is declared lower-is-better (unknown columns rank high-first)."""
    m = lookup(name)
    return m is None or not m.lower_is_better


def lower_is_better(name: str) -> bool:
    m = lookup(name)
    return m is not None and m.lower_is_better


def bootstrappable(name: str) -> bool:
    m = lookup(name)
    return m is not None and m.bootstrap


def aggregation(name: str) -> Aggregation:
    m = lookup(name)
    return m.aggregation if m is not None else "none"


def direction_tags() -> dict[str, str]:
    """What trackers tag a run with, so their UIs can be read the right way round: the metrics
    (patterns, ``{k}`` for eval.k) where higher, and where lower, is better."""
    return {f"metrics.{d}_is_better": ", ".join(m.pattern for m in METRICS if m.direction == d)
            for d in ("higher", "lower")}


def docs_table() -> str:
    """The markdown table of every declaration, as docs/metrics.md carries it (a test keeps them equal)."""
    lines = ["| column | family | better | resampled per | bootstrap | dtype | definition |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in METRICS:
        better = {"higher": "higher", "lower": "lower", "none": "-"}[m.direction]
        unit = "-" if m.aggregation == "none" else m.aggregation
        lines.append(f"| `{m.pattern}` | {m.family} | {better} | {unit} | {'yes' if m.bootstrap else 'no'} | "
                     f"{m.dtype} | {m.definition} |")
    return "\n".join(lines)

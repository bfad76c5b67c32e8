"""A suite's baseline: per group and metric, the mean and seed spread `bench check` compares with.

The JSON (sorted keys, rounded floats: a refreshed baseline reads as a small diff) holds, per
leaderboard group and gated metric, the mean over the baseline's seeds, their sample std, the
std a seed's value would have if test items flipped independently between seeds (``flip_std``,
from the per-item predictions), and what the rule makes of them for a run of the suite's seeds:
the largest drop it lets pass (``allowed``) and the smallest it catches at the stated power
(``detectable``). Beside it, ``<name>.items.parquet`` keeps each baseline trial's prediction per
test item (label, top-5 hit, per-query values): the check confirms the run scored the same test
items, and reports which seeds reproduced the baseline item for item.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import BenchError
from bench.metrics import registry
from bench.metrics.retrieval_columns import upgrade_legacy_rows
from bench.reporting.leaderboard import spec_from_suite
from bench.reporting.provenance import PACKAGES

FORMAT = 2
DIGITS = 6
ALL = "(all)"
DEFAULT_ALPHA = 0.05  # the gate's false-alarm rate over all its (group, metric) tests
DEFAULT_POWER = 0.8  # the chance of catching a drop of the stated `detectable` size
DEFAULT_FLOOR = 0.01  # smallest allowed drop: a metric that never moved over the seeds must not fail on one item
FLIP_DRAWS = 400  # pseudo-seeds drawn to measure flip_std
REGENERATE = "regenerate it with `bench baseline SUITE --out BASELINE.json` (or restore it from git)"
ITEM_KEYS = ("group", "seed", "item_id")

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN mean would pass every comparison


class MetricBaseline(BaseModel):
    model_config = Strict
    mean: float
    std: float = Field(ge=0, description="sample std over the baseline's seeds; 0 with one seed")
    flip_std: float | None = Field(None, ge=0, description="std of one seed's value if test items flipped "
                                                           "independently between seeds; null: not scorable per item")
    n: int = Field(ge=1, description="seeds with a value")
    values: list[float] | None = Field(None, description="each seed's value (the run's row order; "
                                                          "for the resampled margin); null in older files")
    allowed: float = Field(ge=0, description="largest drop of the run's mean that passes (for rule.run_seeds seeds)")
    detectable: float = Field(ge=0, description="smallest drop caught with probability rule.power")


class GroupBaseline(BaseModel):
    model_config = Strict
    axes: dict[str, Any]
    seeds: list[int] = Field(min_length=1, description="the seeds of the baseline's successful trials")
    metrics: dict[str, MetricBaseline]


class Rule(BaseModel):
    model_config = Strict
    alpha: float = Field(DEFAULT_ALPHA, gt=0, lt=1, description="false-alarm rate of the whole check")
    power: float = Field(DEFAULT_POWER, gt=0, lt=1)
    floors: dict[str, float] = Field(default_factory=dict, description="per metric: smallest allowed drop")
    run_seeds: int = Field(ge=1, description="seeds per group a check runs (the suite's)")


class Baseline(BaseModel):
    model_config = Strict
    format: Literal[2] = FORMAT
    suite: str
    suite_hash: str
    subset: int | None = Field(None, ge=1)
    group_by: list[str]
    versions: dict[str, str] = Field(default_factory=dict)
    rule: Rule
    items_file: str | None = Field(None, description="the per-item predictions beside this file")
    items_sha256: str | None = None
    groups: dict[str, GroupBaseline]

    @property
    def tests(self) -> int:
        """(group, metric) pairs the check tests: the false-alarm rate is shared among them."""
        return sum(len(g.metrics) for g in self.groups.values())

    def floor(self, metric: str) -> float:
        return self.rule.floors.get(metric, DEFAULT_FLOOR)


# ---- the suite ----------------------------------------------------------------------------------

def with_seeds(loaded, count: int, file=None):
    """The suite with ``count`` seeds per group: its own seeds, then the next unused integers.

    A baseline is worth more seeds than a check: its seed spread is what the check's margin is
    made of, and its mean enters every comparison. The trials of the suite's own seeds keep their
    keys, so a check of the suite reproduces them exactly.
    """
    import dataclasses

    from bench.config.matrix import trial_key
    from bench.config.schema import TrialSpec

    own = sorted({t.config.get("seed", 0) for t in loaded.trials})
    if count < len(own):
        raise BenchError(f"--seeds {count} is fewer than the suite's own {len(own)} seeds", file=file,
                         field="--seeds", fix=f"pass --seeds {len(own)} or more (a check runs the suite's seeds)")
    extra, candidate = [], max(own) + 1
    while len(own) + len(extra) < count:
        extra.append(candidate)
        candidate += 1
    templates = [t for t in loaded.trials if t.config.get("seed", 0) == own[0]]
    added = []
    for seed in extra:
        for t in templates:
            config = {**t.config, "seed": seed}
            added.append(TrialSpec(trial_key(config), {**t.axes, "seed": seed}, dict(t.hyper), config))
    return dataclasses.replace(loaded, trials=[*loaded.trials, *added])


# ---- rows -> groups ---------------------------------------------------------------------------

def group_by_of(suite) -> list[str]:
    """The leaderboard's grouping: every matrix and search axis except the seed."""
    return spec_from_suite(suite).group_by


def group_key(axes: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in axes.items()) or ALL


def ok_rows(rows: pl.DataFrame) -> pl.DataFrame:
    rows = upgrade_legacy_rows(rows)  # retrieval rows stored under the old metric names
    return rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows


def gated_metrics(rows: pl.DataFrame, chosen: list[str] | None = None) -> list[str]:
    """The headline test quality metrics (registry, any k) the rows have values of; ``chosen``
    names others (any test quality metric of the registry)."""
    ok = ok_rows(rows)
    present = [c for c in ok.columns if registry.is_quality(c) and registry.lookup(c).split == "test"
               and ok[c].dtype.is_numeric() and ok[c].drop_nulls().len() > 0]
    ordered = registry.quality_columns(present) + [c for c in present if c not in registry.quality_columns(present)]
    if chosen is None:
        return [m for m in ordered if registry.lookup(m).gated_by_default]
    for name in chosen:
        registry.require(name)
        if name not in present:
            raise BenchError(f"the run has no value of metric '{name}'", field="--metric",
                             fix=f"use one of: {', '.join(ordered) or '(none)'}")
    return [m for m in ordered if m in chosen]


def split_groups(rows: pl.DataFrame, group_by: list[str]) -> dict[str, tuple[dict[str, Any], pl.DataFrame]]:
    """Group key -> (axes, rows); a grouping column the rows lack gives each row value None."""
    if rows.is_empty():
        return {}
    cols = [pl.col(g) if g in rows.columns else pl.lit(None).alias(g) for g in group_by]
    keyed = rows.with_columns(cols) if cols else rows
    if not group_by:
        return {ALL: ({}, keyed)}
    out = {}
    for part in keyed.partition_by(group_by, maintain_order=True):
        axes = {g: part[g][0] for g in group_by}
        out[group_key(axes)] = (axes, part)
    return out


def metric_values(part: pl.DataFrame, metric: str) -> np.ndarray:
    if metric not in part.columns:
        return np.zeros(0)
    values = part[metric].cast(pl.Float64, strict=False).drop_nulls().drop_nans()
    return values.to_numpy()


def failed_trials(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.filter(pl.col("status") != "ok") if "status" in rows.columns else rows.head(0)


def versions_from_rows(rows: pl.DataFrame) -> dict[str, str]:
    """Package versions the rows were produced with (from the provenance columns)."""
    out = {}
    for name in (*PACKAGES, "python"):
        col = "python" if name == "python" else f"v_{name.replace('-', '_')}"
        if col in rows.columns and rows[col].drop_nulls().len():
            out[name] = str(rows[col].drop_nulls()[0])
    return out


def rounded(value: float) -> float:
    return round(float(value), DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


# ---- per-item predictions -----------------------------------------------------------------------

def item_table(rows: pl.DataFrame, predictions: pl.DataFrame | None, group_by: list[str]) -> pl.DataFrame:
    """Each successful trial's test prediction per item, keyed by (group, seed, item_id).

    Kept: true and predicted label, whether the true label is in the top 5, and the per-query
    values of retrieval metrics: what the registry's item and query metrics are computed from.
    """
    keep = ["true_label", "pred_label", "top_hit"]
    ok = ok_rows(rows)
    if predictions is None or predictions.is_empty() or ok.is_empty() or "trial_key" not in ok.columns:
        return pl.DataFrame(schema={"group": pl.Utf8, "seed": pl.Int64, "item_id": pl.Utf8})
    keys = {r["trial_key"]: (group_key({g: r.get(g) for g in group_by}), r.get("seed"))
            for r in ok.iter_rows(named=True)}
    p = predictions.filter(pl.col("trial_key").is_in(list(keys)))
    if "topk_labels" in p.columns and "true_label" in p.columns:
        p = p.with_columns(pl.col("topk_labels").cast(pl.List(pl.Utf8)).list.contains(pl.col("true_label").cast(pl.Utf8))
                           .alias("top_hit"))
    per_query = [c for c in p.columns if registry.aggregation(c) == "query" and p.schema[c].is_numeric()]
    cols = [c for c in keep if c in p.columns] + per_query
    group = pl.col("trial_key").replace_strict({k: v[0] for k, v in keys.items()}, return_dtype=pl.Utf8)
    seed = pl.col("trial_key").replace_strict({k: v[1] for k, v in keys.items()}, return_dtype=pl.Int64)
    out = p.select(group.alias("group"), seed.alias("seed"), pl.col("item_id").cast(pl.Utf8),
                   *[pl.col(c).cast(pl.Utf8) if c in ("true_label", "pred_label") else pl.col(c) for c in cols])
    return out.sort(*ITEM_KEYS)


def flip_std(items: pl.DataFrame, metric: str, seed: int = 0) -> float | None:
    """The std of one seed's ``metric`` if each test item's prediction were drawn independently
    from the baseline seeds' predictions of it: the seed spread that item flips alone explain.

    Computed on pseudo-seeds that take each item's prediction from a random baseline seed, with
    the project's own scorers (bench.reporting.significance); None for a metric the stored
    predictions cannot score, or with fewer than two seeds.
    """
    from bench.reporting.significance import EncodedPredictions, encode_predictions

    if items.is_empty() or items["seed"].n_unique() < 2:
        return None
    frame = items.rename({"seed": "trial_key"}).with_columns(pl.col("trial_key").cast(pl.Utf8))
    encoded = encode_predictions(_as_predictions(frame))
    trials = [encoded[k] for k in sorted(encoded)]
    if not trials:
        return None
    order = trials[0].select("item_id")
    aligned = [order.join(t, on="item_id", how="left", maintain_order="left") for t in trials]
    stacked = pl.concat(aligned, how="vertical_relaxed")
    n_items, n_seeds = order.height, len(aligned)
    if metric in stacked.columns:  # a per-query metric: the queries it scores in every seed
        values = stacked[metric].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(n_seeds, n_items)
        scored = np.isfinite(values).all(axis=0)
        if scored.sum() < 1:
            return None
        n_items = int(scored.sum())
        whole = EncodedPredictions(None, None, None, 0, {metric: values[:, scored].ravel()})
    elif "true" in stacked.columns and registry.aggregation(metric) == "item":  # the items labelled in every seed
        true, pred = (stacked[c].fill_null(-1).to_numpy().reshape(n_seeds, n_items) for c in ("true", "pred"))
        scored = ((true >= 0) & (pred >= 0)).all(axis=0)
        hits = stacked["top_hit"].to_numpy().reshape(n_seeds, n_items)[:, scored] if not stacked["top_hit"].filter(
            pl.Series(np.tile(scored, n_seeds))).null_count() else None
        n_items = int(scored.sum())
        whole = EncodedPredictions(true[:, scored].ravel(), pred[:, scored].ravel(),
                                   None if hits is None else hits.astype(bool).ravel(), int(aligned[0]["n_labels"][0]))
        if n_items < 1 or not whole.supports(metric):
            return None
    else:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_seeds, size=(FLIP_DRAWS, n_items)) * n_items + np.arange(n_items)[None, :]
    values = whole.score(metric, idx)
    # the spread of draws from the seeds' empirical distribution is short of the population's by (S-1)/S
    return rounded(math.sqrt(float(values.var(ddof=1)) * n_seeds / (n_seeds - 1)))


def _as_predictions(frame: pl.DataFrame) -> pl.DataFrame:
    """The item table in the shape of stored predictions: the top-5 hit as a one-label topk_labels."""
    if "top_hit" in frame.columns:
        frame = frame.with_columns(pl.when(pl.col("top_hit")).then(pl.concat_list(pl.col("true_label")))
                                   .otherwise(pl.lit([], dtype=pl.List(pl.Utf8))).alias("topk_labels"))
    return frame.drop([c for c in ("group", "top_hit") if c in frame.columns])


def items_digest(items: pl.DataFrame) -> str:
    """A digest of the item table's content (not of its parquet bytes, which vary by writer)."""
    canonical = items.sort(*ITEM_KEYS).write_csv()
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---- building ---------------------------------------------------------------------------------

def build_baseline(rows: pl.DataFrame, predictions: pl.DataFrame | None, *, suite: str, suite_hash: str,
                   group_by: list[str], subset: int | None, run_seeds: int, metrics: list[str] | None = None,
                   alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                   floors: dict[str, float] | None = None, floor: float | None = None
                   ) -> tuple[Baseline, pl.DataFrame]:
    """The baseline of a run's successful rows (the caller rejects runs with failed trials) and its
    per-item table. ``floor`` is every metric's smallest allowed drop, ``floors`` one metric's (wins)."""
    from bench.reporting.check import thresholds

    gated = gated_metrics(rows, metrics)
    items = item_table(rows, predictions, group_by)
    rule = Rule(alpha=alpha, power=power, run_seeds=run_seeds,
                floors={m: (floors or {}).get(m, DEFAULT_FLOOR if floor is None else floor) for m in gated})
    raw: dict[str, tuple[dict, list[int], dict[str, tuple]]] = {}
    for key, (axes, part) in split_groups(ok_rows(rows), group_by).items():
        group_items = items.filter(pl.col("group") == key)
        stats = {}
        for m in gated:
            values = metric_values(part, m)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                stats[m] = (rounded(values.mean()), rounded(std), flip_std(group_items, m), len(values),
                            [rounded(v) for v in values])
        seeds = sorted(int(s) for s in part["seed"].to_list()) if "seed" in part.columns else [0]
        raw[key] = (axes, seeds, stats)
    tests = sum(len(s) for _, _, s in raw.values())
    groups = {}
    for key, (axes, seeds, stats) in raw.items():
        out = {}
        for m, (mean, std, flip, n, seed_values) in stats.items():
            allowed, detectable, _ = thresholds(max(std, flip or 0.0), n, run_seeds, tests, rule.alpha, rule.power,
                                                rule.floors[m], seed_values)
            out[m] = MetricBaseline(mean=mean, std=std, flip_std=flip, n=n, values=seed_values, allowed=rounded(allowed),
                                    detectable=rounded(detectable))
        groups[key] = GroupBaseline(axes=axes, seeds=seeds, metrics=out)
    baseline = Baseline(suite=suite, suite_hash=suite_hash, subset=subset, group_by=list(group_by),
                        versions=versions_from_rows(rows), rule=rule, groups=groups)
    return baseline, items


# ---- files ------------------------------------------------------------------------------------

def items_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".json") + ".items.parquet")


def dump_baseline(baseline: Baseline) -> str:
    return json.dumps(baseline.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_baseline(path: str | Path, baseline: Baseline, items: pl.DataFrame) -> Baseline:
    """The JSON and, when there are per-item predictions, the parquet beside it (both atomically)."""
    from bench.storage.paths import atomic_write_text

    path = Path(path)
    if not items.is_empty():
        target = items_path(path)
        tmp = target.with_name(target.name + ".tmp")
        items.write_parquet(tmp, compression="zstd", statistics=False)
        tmp.replace(target)
        baseline = baseline.model_copy(update={"items_file": target.name, "items_sha256": items_digest(items)})
    atomic_write_text(path, dump_baseline(baseline))
    return baseline


def read_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a baseline file" if path.is_dir() else "baseline file not found"
        raise BenchError(what, file=path, field="--baseline",
                         fix="pass the JSON file written by `bench baseline SUITE --out BASELINE.json`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BenchError("the baseline file is not UTF-8 text", file=path, fix=REGENERATE) from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"not valid JSON: {exc.msg}", file=path, field=f"line {exc.lineno}, column {exc.colno}",
                         fix=REGENERATE) from None
    if isinstance(data, dict) and data.get("format") == 1:
        raise BenchError("a baseline of format 1 (a tolerance of floor + k x std from two seeds), which the "
                         "check no longer reads: it let large drops pass", file=path, field="format", fix=REGENERATE)
    try:
        return Baseline.model_validate(data)
    except ValidationError as exc:
        from bench.config.validation import describe_validation_error

        raise BenchError(f"not a mic-bench baseline: {describe_validation_error(exc, Baseline)}", file=path,
                         fix=REGENERATE) from None


def read_items(path: str | Path, baseline: Baseline) -> pl.DataFrame | None:
    """The baseline's per-item table, checked against the digest the JSON records (None if it has none)."""
    if baseline.items_file is None:
        return None
    target = Path(path).with_name(baseline.items_file)
    if not target.is_file():
        raise BenchError(f"the baseline's per-item predictions ({baseline.items_file}) are missing", file=target,
                         field="items_file", fix="restore the file beside the baseline from git, or " + REGENERATE)
    try:
        items = pl.read_parquet(target)
    except Exception as exc:
        raise BenchError(f"not a readable parquet file: {str(exc).splitlines()[0][:200]}", file=target,
                         fix=REGENERATE) from None
    if not set(ITEM_KEYS) <= set(items.columns) or items_digest(items) != baseline.items_sha256:
        raise BenchError("the per-item predictions do not match the baseline (another run's, or edited)",
                         file=target, field="items_sha256", fix=REGENERATE)
    return items


def parse_floors(pairs: tuple[str, ...] | list[str], known: list[str] | None = None) -> dict[str, float]:
    """``--tolerance METRIC=ABS`` pairs (a metric's smallest allowed drop); a metric the baseline
    does not check is an error, not a no-op."""
    out = {}
    for pair in pairs:
        metric, sep, raw = pair.partition("=")
        try:
            value = float(raw) if sep and metric.strip() else math.nan
        except ValueError:
            value = math.nan
        if not (value >= 0 and math.isfinite(value)):  # NaN or inf would let every drop pass
            raise BenchError(f"'{pair}' is not METRIC=ABS with ABS a finite number >= 0", field="--tolerance",
                             fix="write e.g. --tolerance accuracy=0.02")
        metric = metric.strip()
        if known is not None and metric not in known:
            raise BenchError(f"the baseline has no metric '{metric}'", field="--tolerance",
                             fix=f"use one of: {', '.join(known) or '(none)'}")
        out[metric] = value
    return out

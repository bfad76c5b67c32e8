"""Turn pydantic validation errors into one readable line per problem."""
from __future__ import annotations

import difflib
import re

from pydantic import BaseModel, ValidationError


def field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The fields allowed where an unknown key was found (walks nested models by name)."""
    current = model
    for part in loc[:-1]:
        if current is None or isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        current = _first_model(ann)
    return sorted(current.model_fields) if current is not None else []


def _first_model(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = field_path(((prefix,) if prefix else ()) + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            msg = "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == r"^[A-Za-z0-9_.-]+$":
            msg += " (letters, digits, '_', '.' and '-' only)"
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


# ---- names that become folders or row columns ----------------------------------------------------

# Columns every row may carry (bench/trial/run.py and session.py, bench/reporting/provenance.py, metrics): an axis of the same
# name would be overwritten by them, or overwrite them, and the row would lie.
RESERVED_COLUMNS = frozenset({
    "trial_key", "status", "error", "traceback", "config", "seed",
    "accuracy", "macro_f1", "top5_accuracy", "head_macro_f1", "tail_macro_f1", "f1", "f1_threshold",
    "train_samples_per_s", "eval_samples_per_s", "train_s", "wall_s", "peak_mem_mb", "gpu_peak_mem_mb",
    "n_params", "n_trainable_params", "n_train", "n_dev", "n_test", "n_ssl", "device", "cache_s",
    "cache_hits", "cache_misses", "late_alpha",
    "plugins", "suite_hash", "git_commit", "host_cpu", "host_gpu", "python",
    # Ray Tune's own result keys: the trainable reports every numeric column to Tune
    "ok", "done", "training_iteration", "trial_id", "time_this_iter_s", "time_total_s", "timestamp",
    "date", "pid", "hostname", "node_ip", "experiment_tag",
})
# Column families: dev_<metric>, loss_<stage>, data_<note>, v_<package>, top<k>_accuracy, ndcg@<k> ...
RESERVED_PATTERN = re.compile(r"^(dev_|loss_|data_|v_).+|^top\d+_accuracy$|^(ndcg|mar|map)@\d+$|_macro_f1$")


def path_problem(name: object) -> str | None:
    """Why ``name`` cannot be one folder name (None when it can)."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL character"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\')"
    if name.startswith(".") and set(name) == {"."}:
        return f"'{name}' names a parent or current folder"
    if name != name.strip():
        return "it starts or ends with white space"
    return None


def column_problem(name: str, *, seed_axis: bool = False) -> str | None:
    """Why an axis name would collide with a row column (None when it does not)."""
    if name == "seed" and seed_axis:
        return None
    from bench.metrics.registry import lookup

    if name in RESERVED_COLUMNS or RESERVED_PATTERN.search(name) or lookup(name) is not None:  # any declared metric
        return f"'{name}' is also a column of every trial row (status, metrics, cost, provenance)"
    return None


def axis_name_problem(name: object, *, seed_axis: bool = True) -> str | None:
    """Axis names are row columns and dotted paths into the trial: no path fragments, no collisions."""
    problem = path_problem(name)
    if problem:
        return problem
    assert isinstance(name, str)
    if name.startswith(".") or name.endswith(".") or ".." in name:
        return "a dotted path has an empty part"
    if len(name) > 200:
        return "it is longer than 200 characters"
    return column_problem(name, seed_axis=seed_axis)


# ---- leaderboard settings: axes and metrics that exist ------------------------------------------

# Row metrics besides the leaderboard's QUALITY and COST lists (bench/metrics, bench/trial/run.py).
MORE_METRICS = ("eval_samples_per_s", "train_s", "cache_s", "gpu_peak_mem_mb", "n_trainable_params",
                "f1_threshold", "pair_threshold", "n_test_pair_matches")
METRIC_PATTERN = re.compile(r"^(dev_)?((ndcg|mar|p|map|mrr|recall)@\d+|top\d+_accuracy)$")


def known_metrics() -> list[str]:
    from bench.reporting.leaderboard import COST, QUALITY

    return list(dict.fromkeys([*QUALITY, *COST, *MORE_METRICS]))


def is_metric(name: str) -> bool:
    """A column a trial row can hold a figure in: a declared metric or cost, its dev_ form, or an @k variant."""
    plain = name.removeprefix("dev_")
    return plain in known_metrics() or bool(METRIC_PATTERN.match(name))


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


def check_leaderboard(suite, trials: list, file: str) -> None:
    """`leaderboard:` and `reference:` name axes, metrics and groups the run will have.

    A misspelt group_by would group by trial key, a misspelt sort would sort by the first metric,
    and a reference keyed by a group that never occurs would show nothing: all silently.
    """
    from bench.errors import BenchError

    axes = [*suite.matrix, *(suite.search.space if suite.search else [])]
    allowed_axes = list(dict.fromkeys([*axes, "seed"]))
    lb = suite.leaderboard
    named = [(f"leaderboard.group_by[{i}]", g) for i, g in enumerate(lb.group_by or [])]
    if lb.pivot is not None:
        named += [("leaderboard.pivot.rows", lb.pivot.rows), ("leaderboard.pivot.columns", lb.pivot.columns)]
    for field, name in named:
        if name not in allowed_axes:
            raise BenchError(f"'{name}' is not an axis of this suite (its axes: {', '.join(allowed_axes)})",
                             file=file, field=field, fix=f"{_closest(name, allowed_axes)}group by matrix or search axes")
    if lb.sort and not is_metric(lb.sort):
        raise BenchError(f"'{lb.sort}' is not a metric a trial row holds", file=file, field="leaderboard.sort",
                         fix=f"{_closest(lb.sort, known_metrics())}see docs/metrics.md for the metric names")
    # shown columns may also be values a plugin reports in its rows (a fitted weight such as
    # hybrid_weight), which no list holds: refused only when a metric's name is misspelt
    shown = [(f"leaderboard.metrics[{i}]", m) for i, m in enumerate(lb.metrics or [])]
    if lb.pivot is not None:
        shown += [("leaderboard.pivot.value", lb.pivot.value)]
        shown += [(f"leaderboard.pivot.extra_values[{i}]", m) for i, m in enumerate(lb.pivot.extra_values)]
    for field, name in shown:
        close = difflib.get_close_matches(name.removeprefix("dev_"), known_metrics(), n=3, cutoff=0.8)
        if not is_metric(name) and close:
            raise BenchError(f"'{name}' is not a metric a trial row holds", file=file, field=field,
                             fix=f"did you mean {', '.join(repr(c) for c in close)}? see docs/metrics.md for the "
                                 "metric names")
    _check_reference(suite, trials, file)


def _check_reference(suite, trials: list, file: str) -> None:
    """Reference keys are group labels of this suite; figure names are metrics (or a metric with a
    suffix naming the published setting, such as macro_f1_B)."""
    from bench.errors import BenchError

    if not suite.reference:
        return
    group_by = suite.leaderboard.group_by or [a for a in suite.matrix if a != "seed"]
    if group_by:
        labels = [" / ".join(str(_axis_value(t, g)) for g in group_by) for t in trials]
    else:
        labels = [t.key for t in trials]
    labels = list(dict.fromkeys(labels))
    for key, figures in suite.reference.items():
        if key not in labels:
            shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
            raise BenchError(f"no group of the leaderboard is called '{key}' (grouped by "
                             f"{', '.join(group_by) or 'trial_key'}: {shown})", file=file,
                             field=f"reference.{key}", fix=f"{_closest(key, labels)}key each reference by a group label")
        for name in figures:
            base = next((m for m in known_metrics() if name.startswith(m + "_")), None)
            if not is_metric(name) and base is None and not METRIC_PATTERN.match(name.split("_")[0]):
                raise BenchError(f"'{name}' is not a metric (nor a metric with a suffix, such as macro_f1_B)",
                                 file=file, field=f"reference.{key}.{name}",
                                 fix=f"{_closest(name, known_metrics())}name the figure after the metric it quotes")


def _axis_value(trial, axis: str):
    if axis in trial.axes:
        return trial.axes[axis]
    if axis in trial.hyper:
        return trial.hyper[axis]
    return trial.config.get(axis)

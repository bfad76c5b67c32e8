"""Matrix expansion helpers: axis values, dotted-path overrides, search sampling, trial keys."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from typing import Any

from bench.errors import BenchError

# Matrix axes that are shorthand for a path in the trial config.
AXIS_PATHS = {
    "seed": "seed",
    "finetune_fraction": "finetune_fraction",
    "task": "task",
}
# Shorthand axes that name a plugin: each value replaces the whole {name, options} of that slot, so no
# option of the trial's own plugin is carried into another plugin. A value is a plugin name or a
# mapping {name, options} (plus `label:` when two values share a plugin name).
PLUGIN_AXES = {
    "fusion": "fusion",
    "dataset": "dataset",
    "text_encoder": "encoders.text",
    "image_encoder": "encoders.image",
}
PLUGIN_VALUE_KEYS = ("name", "options", "label")


def deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


DEFAULT_STAGE_NAME = "train"  # bench.config.schema.StageConfig.name


def merge_stages(base: Any, override: Any) -> Any:
    """A matrix value's `stages:` list over the trial's, by stage name: the value's list decides
    which stages run and in what order; a stage named like one of the trial's (an unnamed stage is
    "train") is deep-merged over it, so fields it leaves out (epochs, optimizer.lr ...) keep the
    trial's values; a stage with a new name is taken as written."""
    if not (isinstance(base, list) and isinstance(override, list)):
        return copy.deepcopy(override)
    by_name = {s.get("name", DEFAULT_STAGE_NAME): s for s in base if isinstance(s, dict)}
    out = []
    for stage in override:
        name = stage.get("name", DEFAULT_STAGE_NAME) if isinstance(stage, dict) else None
        out.append(deep_merge(by_name[name], stage) if name in by_name else copy.deepcopy(stage))
    return out


def merge_named_value(config: dict, override: dict) -> dict:
    """A named axis value deep-merged into the trial, except that a plugin slot (dataset, fusion,
    encoders.<modality>) it gives by name, as `late` or {name: late, options: {...}}, replaces the
    trial's slot whole: options of the trial's plugin never carry into the value's plugin; and
    `stages:` merges stage by stage, by name (``merge_stages``)."""
    merged = deep_merge(config, override)
    if "stages" in override:
        merged["stages"] = merge_stages(config.get("stages"), override["stages"])
    slots = [("dataset",), ("fusion",)] + [("encoders", m) for m in (override.get("encoders") or {})
                                             if isinstance(override.get("encoders"), dict)]
    for path in slots:
        value: Any = override
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) or (isinstance(value, dict) and "name" in value):
            parent = merged
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(value)
    return merged


REF_FIELDS = ("name", "options", "weight")  # a plugin given by name alone (`fusion: late`) opens into these


def set_path(config: dict, path: str, value: Any, *, file: str, axis: str) -> None:
    """Set a dotted path (list indices as numbers) inside the trial config.

    A path may only pass through mappings and lists (and a plugin's bare name, which opens into
    name/options): going into a number or a text would silently drop the value or the setting.
    """
    parts = path.split(".")
    field = f"matrix.{axis}"
    if any(not p for p in parts):
        raise BenchError(f"'{path}' has an empty part", file=file, field=field,
                         fix="write dotted paths like stages.0.epochs")
    node: Any = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "trial"
        if isinstance(node, list):
            try:
                idx = int(part)
                if idx < 0:
                    raise IndexError(idx)
                node[idx]
            except (ValueError, IndexError):
                raise BenchError(f"'{part}' is not an index of the list at '{where}'",
                                 file=file, field=field, fix="use a valid list index, e.g. stages.0.epochs") from None
            if last:
                _refuse_yes_no_for_number(node[idx], value, path, file=file, field=field)
                node[idx] = copy.deepcopy(value)
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise BenchError(f"'{where}' is {_kind(node)} ({node!r}), so '{path}' cannot go into it", file=file,
                             field=field, fix=f"set '{where}' itself, or point the axis at a mapping or list")
        if last:
            _refuse_yes_no_for_number(node.get(part), value, path, file=file, field=field)
            node[part] = merge_stages(node.get(part), value) if path == "stages" else copy.deepcopy(value)
            continue
        child = node.get(part)
        if child is None:
            node[part] = {}
        elif isinstance(child, str) and parts[i + 1] in REF_FIELDS:
            node[part] = {"name": child}
        elif not isinstance(child, (dict, list)):
            raise BenchError(f"'{'.'.join(parts[:i + 1])}' is {_kind(child)} ({child!r}), so '{path}' cannot go "
                             "into it", file=file, field=field,
                             fix=f"set '{'.'.join(parts[:i + 1])}' itself, or point the axis at a mapping or list")
        node = node[part]


def _refuse_yes_no_for_number(old: Any, value: Any, path: str, *, file: str, field: str) -> None:
    """An axis value of yes/no where the trial holds a number: YAML's `yes`/`no`/`on`/`off` are
    booleans, which a number field (or a plugin option) would read as 1 and 0 without a word."""
    if isinstance(value, bool) and isinstance(old, (int, float)) and not isinstance(old, bool):
        raise BenchError(f"the value {str(value).lower()} is a yes/no value but '{path}' holds a number ({old!r}); "
                         "YAML reads yes, no, on, off, true and false as yes/no", file=file, field=field,
                         fix="write the numbers, e.g. [0, 1]")


def _kind(value: Any) -> str:
    return {bool: "a yes/no value", int: "a number", float: "a number", str: "a text"}.get(type(value), "a value")


def axis_values(axis: str, values: list | dict, file: str) -> list[tuple[Any, Any]]:
    """(label, override) pairs for one axis.

    For a plugin axis (PLUGIN_AXES) the override is the slot's whole value {name, options}."""
    if isinstance(values, dict):
        return [(label, override) for label, override in values.items()]
    if not values:
        raise BenchError("a matrix axis needs at least one value", file=file, field=f"matrix.{axis}",
                         fix="list the values, e.g. [0, 1]")
    if axis in PLUGIN_AXES:
        pairs = [plugin_value(axis, i, v, file) for i, v in enumerate(values)]
        labels = [label for label, _ in pairs]
        for label in labels:
            if labels.count(label) > 1:
                raise BenchError(f"two values have the label '{label}'", file=file, field=f"matrix.{axis}",
                                 fix=f"give each a distinct label: `{{name: {label}, options: {{...}}, label: ...}}`")
        return pairs
    return [(v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True), v) for v in values]


def plugin_value(axis: str, index: int, value: Any, file: str) -> tuple[str, dict]:
    """(label, {name, options}) for one value of a plugin axis: a name, or {name, options, label}."""
    field = f"matrix.{axis}[{index}]"
    fix = "write a plugin name, or {name: late, options: {...}} (optionally with label: ...)"
    if isinstance(value, str):
        return value, {"name": value}
    if not isinstance(value, dict):
        raise BenchError(f"{value!r} is not a plugin name or a {{name, options}} mapping", file=file,
                         field=field, fix=fix)
    unknown = sorted(set(value) - set(PLUGIN_VALUE_KEYS))
    if unknown or not isinstance(value.get("name"), str):
        problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "it needs a `name` (text)"
        raise BenchError(f"a plugin value takes name, options and label: {problem}", file=file, field=field, fix=fix)
    label = value.get("label", value["name"])
    if not isinstance(label, (str, int, float)) or isinstance(label, bool):
        raise BenchError(f"the label {label!r} must be a text", file=file, field=f"{field}.label", fix=fix)
    return str(label), {k: copy.deepcopy(v) for k, v in value.items() if k != "label"}


MAX_TRIALS = 10_000  # a matrix beyond this is a typo, not a benchmark; refused before it expands


def check_axes(matrix: dict, search, file: str) -> None:
    """Axis and search-space names are row columns and paths: no path fragments, no column collisions."""
    from bench.config.validation import axis_name_problem

    for section, names in (("matrix", list(matrix)), ("search.space", list(search.space) if search else [])):
        for name in names:
            # `seed` is the trial's seed; a named axis called seed would hide its labels behind the seed column
            problem = axis_name_problem(name, seed_axis=not (section == "matrix" and isinstance(matrix[name], dict)))
            if problem:
                raise BenchError(f"the axis name {name!r} cannot be used: {problem}", file=file,
                                 field=f"{section}.{name}",
                                 fix="rename the axis (a named axis can set any field: "
                                     "`matrix: {method: {a: {device: cpu}, b: {...}}}`)")
    both = set(matrix) & set(search.space if search else {})
    if both:
        raise BenchError(f"'{sorted(both)[0]}' is both a matrix axis and a search parameter", file=file,
                         field=f"search.space.{sorted(both)[0]}", fix="keep it in one of the two")


def check_search(search, file: str) -> None:
    """Every search parameter has exactly one distribution whose arguments can be sampled."""
    if search is None:
        return
    for name, spec in search.space.items():
        field = f"search.space.{name}"
        if len(spec) != 1:
            raise BenchError(f"needs exactly one distribution, found {len(spec)} ({', '.join(spec) or 'none'})",
                             file=file, field=field, fix="write e.g. `lr: {loguniform: [1.0e-5, 1.0e-2]}`")
        (dist, args), = spec.items()
        problem = _distribution_problem(dist, args)
        if problem:
            raise BenchError(problem, file=file, field=f"{field}.{dist}", fix=_DIST_FIX[dist])


_DIST_FIX = {
    "loguniform": "write [low, high] with 0 < low < high, e.g. [1.0e-5, 1.0e-2]",
    "uniform": "write [low, high] with low < high, e.g. [0.0, 0.5]",
    "randint": "write [low, high] with whole numbers, low < high (high excluded), e.g. [8, 65]",
    "choice": "list the values to choose from, e.g. [8, 16, 32]",
    "grid": "list the values to try, e.g. [8, 16, 32]",
}


def _distribution_problem(dist: str, args: list) -> str | None:
    import math

    if dist in ("choice", "grid"):
        return None if args else f"{dist} needs at least one value"
    if len(args) != 2:
        return f"{dist} needs two bounds [low, high], got {len(args)} values"
    low, high = args
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args)
    if not numbers or not all(math.isfinite(v) for v in args):
        return f"{dist} bounds must be finite numbers, got {args!r}"
    if dist == "randint" and not all(float(v).is_integer() for v in args):
        return f"randint bounds must be whole numbers, got {args!r}"
    if dist == "loguniform" and low <= 0:
        return f"loguniform needs low > 0 (the log of {low} is undefined), got {args!r}"
    if not low < high:
        return f"{dist} needs low < high, got {args!r}"
    return None


def count_trials(matrix: dict, search, file: str) -> int:
    """How many trials the suite expands to, refused beyond MAX_TRIALS before anything expands."""
    total = 1
    for axis, values in matrix.items():
        total *= max(len(values), 1)
    if search is not None and search.space:
        grid = 1
        for spec in search.space.values():
            if "grid" in spec:
                grid *= max(len(spec["grid"]), 1)
        total *= grid * search.samples
    if total > MAX_TRIALS:
        raise BenchError(f"the matrix expands to {total} trials (at most {MAX_TRIALS})", file=file,
                         field="search.samples" if search is not None and search.samples > 1 else "matrix",
                         fix="fewer axis values, grid values or search samples; split the suite in several")
    return total


def sample_search(search) -> list[dict[str, Any]]:
    """Concrete hyperparameter sets: grids crossed, distributions sampled with the search seed."""
    if search is None or not search.space:
        return [{}]
    import numpy as np
    from ray import tune

    rng = np.random.RandomState(search.seed)
    grid_keys = [k for k, spec in search.space.items() if "grid" in spec]
    grids = list(itertools.product(*[search.space[k]["grid"] for k in grid_keys])) or [()]
    out = []
    for _ in range(search.samples):
        sampled = {}
        for k, spec in search.space.items():
            (dist, args), = spec.items()
            if dist == "grid":
                continue
            domain = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint,
                      "choice": lambda *a: tune.choice(list(a))}[dist](*args)
            value = domain.sample(random_state=rng)
            sampled[k] = value.item() if hasattr(value, "item") else value
        for g in grids:
            out.append({**sampled, **dict(zip(grid_keys, g))})
    return out


def trial_key(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---- which matrix entry set which part of a trial: errors inside a trial name the entry ----------

Origin = tuple[tuple[str, ...], str]  # (trial config path, the matrix field that set it)
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_TRIAL_PATH = re.compile(r"trial((?:\.[A-Za-z0-9_@-]+|\[\d+\])+)")


def path_parts(path: str) -> tuple[str, ...]:
    """'stages[0].optimizer.lr' or 'stages.0.optimizer.lr' -> ('stages', '0', 'optimizer', 'lr')."""
    return tuple(index or name for index, name in _PATH_PART.findall(path))


def entry_origins(axis: str, values: list | dict, label: Any, index: int, value: Any) -> list[Origin]:
    """The trial config paths one matrix entry sets, each with the field that names the entry:
    a named value's own fields (`matrix.method.simcse.stages[0]`), a plugin value's slot
    (`matrix.fusion[1]`), a value or dotted-path axis's path (`matrix.stages.0.optimizer.lr[2]`)."""
    if isinstance(values, dict):
        base = f"matrix.{axis}.{label}"
        return [(path_parts(leaf), f"{base}.{leaf}") for leaf in _leaf_paths(value)]
    if axis in PLUGIN_AXES:
        return [(path_parts(PLUGIN_AXES[axis]), f"matrix.{axis}[{index}]")]
    return [(path_parts(AXIS_PATHS.get(axis, axis)), f"matrix.{axis}[{index}]")]


def _leaf_paths(value: Any, prefix: str = "") -> list[str]:
    """Every path a named value sets: into mappings by key, into lists by index."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and prefix:
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, f"{prefix}[{i}]")] or [prefix]
    return [prefix] if prefix else []


def blame_matrix_entry(exc: BenchError, origins: list[Origin], where: str) -> BenchError:
    """The error of one expanded trial, pointed at the matrix entry that set the field it is about
    (the deepest entry that set that field or a field above it); unchanged when no entry set it."""
    found = _TRIAL_PATH.search(exc.field or "") or _TRIAL_PATH.search(exc.message)
    if not found:
        return exc
    parts = path_parts(found.group(1))
    best = max(((len(p), p, f) for p, f in origins if parts[:len(p)] == p or p[:len(parts)] == parts),
               default=None)
    if best is None:
        return exc
    _, prefix, entry = best
    rest = parts[len(prefix):]
    field = entry + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)
    message = exc.message if found.group(0) in exc.message else f"{found.group(0)}: {exc.message}"
    if where and f"(in the trial {where})" not in message:
        message += f" (in the trial {where})"
    return BenchError(message, file=exc.file, field=field, fix=exc.fix)

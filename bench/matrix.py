"""Matrix expansion helpers: axis values, dotted-path overrides, search sampling, trial keys."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from typing import Any

from bench.errors import BenchError

# Matrix axes that are shorthand for a path in the trial config.
AXIS_PATHS = {
    "fusion": "fusion.name",
    "seed": "seed",
    "finetune_fraction": "finetune_fraction",
    "dataset": "dataset.name",
    "task": "task",
    "text_encoder": "encoders.text.name",
    "image_encoder": "encoders.image.name",
}


def deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def set_path(config: dict, path: str, value: Any, *, file: str, axis: str) -> None:
    """Set a dotted path (list indices as numbers) inside the trial config."""
    parts = path.split(".")
    node: Any = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]
            except (ValueError, IndexError):
                raise BenchError(f"'{part}' is not an index of the list at '{'.'.join(parts[:i])}'",
                                 file=file, field=f"matrix.{axis}", fix="use a valid list index, e.g. stages.0.epochs") from None
            if last:
                node[idx] = copy.deepcopy(value)
            else:
                node = node[idx]
        else:
            if last:
                node[part] = copy.deepcopy(value)
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {} if node.get(part) is None else ({"name": node[part]} if isinstance(node[part], str) else node[part])
                node = node[part]


def axis_values(axis: str, values: list | dict, file: str) -> list[tuple[Any, Any]]:
    """(label, override) pairs for one axis."""
    if isinstance(values, dict):
        return [(label, override) for label, override in values.items()]
    if not values:
        raise BenchError("a matrix axis needs at least one value", file=file, field=f"matrix.{axis}",
                         fix="list the values, e.g. [0, 1]")
    return [(v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True), v) for v in values]


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

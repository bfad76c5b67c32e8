"""Load each distinct dataset of a suite once before any trial starts.

A dataset path that does not exist, a column that is not in the file or a file in the wrong
encoding would otherwise surface only inside the trials, as one failed row per trial after
Ray has started. Checked here, the run stops at once with the file, the field and the fix.
"""
from __future__ import annotations

import json
import logging

from bench.errors import BenchError
from bench.suite import LoadedSuite

log = logging.getLogger(__name__)


def preflight(loaded: LoadedSuite, registry, cache_dir: str | None = None) -> None:
    """Raise the first dataset problem of the suite as a BenchError naming the suite and the option."""
    from bench.interfaces import BuildContext

    seen: dict[str, frozenset[str] | None] = {}
    for trial in loaded.trials:
        ref = trial.config["dataset"]
        key = json.dumps(ref, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = _load_tasks(ref, registry, str(loaded.path), BuildContext(cache_dir=cache_dir))
        tasks = seen[key]
        task = trial.config.get("task", "classification")
        if tasks is not None and task not in tasks:
            raise BenchError(f"dataset '{ref['name']}' does not support task '{task}' (it supports: "
                             f"{', '.join(sorted(tasks)) or 'none'}; trial {trial.label()})",
                             file=str(loaded.path), field="trial.task",
                             fix="classification needs a label column with 2+ labels; matching needs a group column")


def _load_tasks(ref: dict, registry, suite_file: str, ctx) -> frozenset[str] | None:
    """The task kinds the loaded catalogue supports; None when a plugin bug is left to the trials."""
    name = ref["name"]
    spec = registry.get("dataset", name, file=suite_file, field="trial.dataset.name")
    options = spec.parse_options(ref.get("options"), file=suite_file, field="trial.dataset.options")
    try:
        catalog = spec.factory(options, ctx)
    except BenchError as exc:
        if exc.file is None:  # an option's value is wrong: point into the suite
            field = f"trial.dataset.options.{exc.field}" if exc.field else "trial.dataset"
            raise BenchError(exc.message, file=suite_file, field=field, fix=exc.fix) from None
        raise BenchError(f"{exc.message} (dataset '{name}' of {suite_file})", file=exc.file, field=exc.field,
                         fix=exc.fix) from None
    except Exception as exc:  # a plugin bug is not the user's input: each trial records it with its traceback
        log.warning("dataset '%s' failed to load before the run (%s: %s); the trials will record it",
                    name, type(exc).__name__, exc)
        return None
    return getattr(catalog, "tasks", None)

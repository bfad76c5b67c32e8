"""Suite files: YAML validated by pydantic, expanded into a matrix of concrete trials."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path

from pydantic import ValidationError

from bench.config.data_paths import check_data_paths
from bench.config.matrix import (AXIS_PATHS, PLUGIN_AXES, axis_values, blame_matrix_entry, check_axes, check_search,
                                 count_trials, entry_origins, merge_named_value, sample_search, set_path, trial_key)
from bench.config.schema import LoadedSuite, Ref, Suite, TrialConfig, TrialSpec
from bench.config.validation import check_leaderboard, describe_validation_error
from bench.config.yaml_files import read_with_includes
from bench.errors import BenchError

def select_trials(loaded: "LoadedSuite", only: list[str]) -> "LoadedSuite":
    """Keep the trials whose axes match every ``AXIS=V1,V2`` filter (for `--only`)."""
    if not only:
        return loaded
    wanted: dict[str, set[str]] = {}
    for item in only:
        axis, sep, values = item.partition("=")
        if not sep or not values:
            raise BenchError(f"--only '{item}' is not AXIS=VALUE[,VALUE...]", field="--only",
                             fix="write e.g. --only fusion=text_only,late --only seed=0")
        if axis not in loaded.axes:
            raise BenchError(f"--only names axis '{axis}', which the suite does not have", file=str(loaded.path),
                             field="--only", fix=f"axes of this suite: {', '.join(loaded.axes) or '(none)'}")
        wanted.setdefault(axis, set()).update(v.strip() for v in values.split(","))
    for axis, values in wanted.items():
        known = {str(t.axes.get(axis, t.hyper.get(axis))) for t in loaded.trials}
        unknown = sorted(values - known)
        if unknown:
            raise BenchError(f"--only {axis}={','.join(unknown)} matches no trial", file=str(loaded.path),
                             field="--only", fix=f"values of {axis}: {', '.join(sorted(known))}")
    kept = [t for t in loaded.trials
            if all(str(t.axes.get(a, t.hyper.get(a))) in v for a, v in wanted.items())]
    return LoadedSuite(loaded.path, loaded.suite, kept, loaded.text_hash, loaded.raw)


def load_suite(path: str | Path, registry=None, subset: int | None = None) -> LoadedSuite:
    """Read, validate and expand a suite; every error names the file and field."""
    path = Path(path)
    raw = read_with_includes(path)
    file = str(path)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise BenchError(describe_validation_error(exc, Suite), file=file,
                         fix="see docs/suites.md for every field and its allowed values") from None
    check_axes(suite.matrix, suite.search, file)
    check_search(suite.search, file)
    count_trials(suite.matrix, suite.search, file)
    axes = list(suite.matrix.items())
    # each value with its position on its axis: an error inside a trial names the matrix entry
    combos = itertools.product(*[list(enumerate(axis_values(a, v, file))) for a, v in axes]) if axes else [()]
    hyper_sets = sample_search(suite.search)
    trials: list[TrialSpec] = []
    for combo in combos:
        for hyper in hyper_sets:
            config = copy.deepcopy(suite.trial)
            labels, origins = {}, []
            for (axis, _), (index, (label, value)) in zip(axes, combo):
                labels[axis] = label
                origins += entry_origins(axis, suite.matrix[axis], label, index, value)
                if isinstance(suite.matrix[axis], dict):
                    if not isinstance(value, dict):
                        raise BenchError(f"value '{label}' must be a mapping of trial fields to override",
                                         file=file, field=f"matrix.{axis}.{label}",
                                         fix="write e.g. `origin: {stages: [...]}` or use a list of plain values")
                    config = merge_named_value(config, value)
                elif axis in PLUGIN_AXES:  # the whole {name, options}: nothing of the trial's plugin carries over
                    set_path(config, PLUGIN_AXES[axis], value, file=file, axis=axis)
                else:
                    set_path(config, AXIS_PATHS.get(axis, axis), value, file=file, axis=axis)
            for name, value in hyper.items():
                set_path(config, name, value, file=file, axis=name)
            if subset is not None:
                config["subset"] = subset
            spec = _validate_trial(config, file, labels, registry, origins)
            trials.append(TrialSpec(trial_key(spec), labels, hyper, spec))
    seen: dict[str, TrialSpec] = {}
    for t in trials:
        if t.key in seen:
            raise BenchError(f"two matrix entries give the same trial ({seen[t.key].label()} and {t.label()})",
                             file=file, field="matrix", fix="remove the duplicate axis value")
        seen[t.key] = t
    check_leaderboard(suite, trials, file)
    text_hash = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LoadedSuite(path=path, suite=suite, trials=trials, text_hash=text_hash, raw=raw)


def _validate_trial(config: dict, file: str, labels: dict, registry, origins: list | None = None) -> dict:
    """The trial's config validated; an error about a field a matrix entry set names that entry."""
    where = " ".join(f"{k}={v}" for k, v in labels.items())
    try:
        try:
            trial = TrialConfig.model_validate(config)
        except ValidationError as exc:
            suffix = f" (in the trial {where})" if where else ""
            raise BenchError(describe_validation_error(exc, TrialConfig, prefix="trial") + suffix, file=file,
                             fix="see docs/suites.md for every field and its allowed values") from None
        if registry is not None:
            check_plugins(trial, registry, file)
        from bench.config.trial_checks import check_trial  # cross-field checks (ssl labels, image-text matching)
        check_trial(trial, registry, file, where)
    except BenchError as exc:
        blamed = blame_matrix_entry(exc, origins or [], where)
        if blamed is exc:
            raise
        raise blamed from None
    if registry is not None:  # the data is there and readable (not loaded): after the suite's own rules
        options = registry.get("dataset", trial.dataset.name).parse_options(trial.dataset.options, file=file)
        check_data_paths(options, file=file, field="trial.dataset.options")
    return trial.model_dump(mode="json")


def plugin_refs(trial: TrialConfig) -> list[tuple[str, str, Ref]]:
    """(kind, field, ref) of every plugin a trial names, in build order."""
    refs = [("dataset", "trial.dataset", trial.dataset), ("task", "trial.task", trial.task)]
    refs += [("encoder", f"trial.encoders.{slot}", ref) for slot, ref in trial.encoders.items()]
    refs.append(("fusion", "trial.fusion", trial.fusion))
    refs += [("objective", f"trial.stages[{i}].objectives[{j}]", ref)
             for i, stage in enumerate(trial.stages) for j, ref in enumerate(stage.objectives)]
    return refs


def check_plugins(trial: TrialConfig, registry, file: str) -> None:
    """Every plugin name exists and its options validate, before anything runs."""
    for kind, field_name, ref in plugin_refs(trial):
        registry.get(kind, ref.name, file=file, field=f"{field_name}.name").parse_options(
            ref.options, file=file, field=f"{field_name}.options")

"""Suite files: YAML validated by pydantic, expanded into a matrix of concrete trials."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError
from bench.matrix import (AXIS_PATHS, PLUGIN_AXES, axis_values, check_axes, check_search, count_trials, deep_merge,
                          merge_named_value, sample_search,
                          set_path, trial_key)
from bench.schedules import ScheduleName
from bench.trackers import TrackerName
from bench.validation import describe_validation_error

# Unknown fields, inf and nan are refused everywhere: `epochs: .inf` would train forever, nan compares false.
Strict = ConfigDict(extra="forbid", allow_inf_nan=False)
SEED = Field(0, ge=0, le=2**32 - 1, description="numpy seeds must fit in 32 bits")
MIN_DEFAULT_HEAD_LR = 1e-3  # heads start from random weights: see OptimizerConfig.head_lr


class Ref(BaseModel):
    """A plugin by name with its options; a bare string is accepted as the name."""

    model_config = Strict
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class TrackerRef(Ref):
    """An experiment tracker fed by Ray Tune's logger callbacks (bench/trackers.py)."""

    name: TrackerName


class ObjectiveRef(Ref):
    weight: float = Field(1.0, ge=0.0)


class OptimizerConfig(BaseModel):
    model_config = Strict
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    head_lr: float | None = Field(None, gt=0, description=(
        "learning rate of everything but the encoders (default: max(lr, 1e-3), since a randomly "
        "initialised head at a fine-tuning rate such as 1e-4 does not converge in a few epochs)"))
    weight_decay: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _default_head_lr(self):
        if self.head_lr is None:
            self.head_lr = max(self.lr, MIN_DEFAULT_HEAD_LR)
        return self


class StageConfig(BaseModel):
    model_config = Strict
    name: str = "train"
    objectives: list[ObjectiveRef] = Field(default_factory=lambda: [ObjectiveRef(name="cross_entropy")], min_length=1)
    data: Literal["train", "ssl", "train+ssl"] = "train"
    epochs: float = Field(1.0, gt=0, le=10_000)
    batch_size: int = Field(32, ge=2, le=65_536)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    sampler: Literal["auto", "random", "pk", "balanced"] = "auto"
    pk_items: int = Field(2, ge=2, le=1024, description="items per group in a P x K batch")
    grad_clip: float | None = Field(1.0, gt=0)
    schedule: ScheduleName = Field("linear", description=(
        "learning-rate schedule after a 10% linear warm-up: linear (decay to 0), cosine (decay to 0) "
        "or constant (see bench/schedules.py)"))


class SplitConfig(BaseModel):
    model_config = Strict
    fractions: dict[Literal["train", "dev", "test", "ssl"], float] | None = None
    use_given: bool | None = None
    seed: int = SEED


class EvalConfig(BaseModel):
    model_config = Strict
    k: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    retrieval: Literal["auto", "off", "embedding", "max_of_kinds"] = "auto"


class SelectionConfig(BaseModel):
    """Model selection on dev during the last stage: evaluate after every epoch (and every
    ``every_steps`` steps), keep the best weights by ``metric``, stop after ``patience``
    evaluations without an improvement of more than ``min_delta``, restore the best before test."""

    model_config = Strict
    metric: str | None = Field(None, pattern=r"^dev_[A-Za-z0-9_@.]+$",
                               description="a dev metric of the row, e.g. dev_macro_f1 or dev_ndcg@10 "
                                           "(default: dev_macro_f1 for classification, dev_ndcg@k for matching, "
                                           "dev_pair_ap for pairs)")
    mode: Literal["max", "min"] = "max"
    patience: int | None = Field(5, ge=1, le=10_000, description="evaluations without improvement before stopping "
                                                                  "(null: never stop early)")
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False)
    every_steps: int | None = Field(None, ge=1, description="also evaluate every N training steps (long epochs)")


class TrialConfig(BaseModel):
    """Everything one trial needs; the suite's `trial` section after matrix overrides."""

    model_config = Strict
    dataset: Ref
    task: Literal["classification", "matching", "pairs"] = "classification"
    encoders: dict[Literal["text", "image", "joint"], Ref] = Field(min_length=1)
    fusion: Ref
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig()], min_length=1)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    finetune_fraction: float = Field(1.0, gt=0, le=1)
    seed: int = SEED
    eval: EvalConfig = Field(default_factory=EvalConfig)
    max_trial_minutes: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    dataloader_workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = "auto"
    cache: bool = Field(True, description="cache preprocessed inputs and frozen-encoder features (content-addressed)")
    subset: int | None = Field(None, ge=1, description="cap every split at this many items (smoke and CI runs)")
    selection: SelectionConfig | Literal["last"] = Field(
        default_factory=SelectionConfig,
        description="keep the dev-best epoch of the last stage (default), or `last` to keep the final weights")

    def selection_metric(self) -> str | None:
        """The dev metric that picks the epoch (None with `selection: last`)."""
        if self.selection == "last":
            return None
        if self.selection.metric:
            return self.selection.metric
        if self.task == "pairs":  # threshold-free, so it does not move with a threshold fitted on dev itself
            return "dev_pair_ap"
        return "dev_macro_f1" if self.task == "classification" else f"dev_ndcg@{self.eval.k}"


class SchedulerConfig(BaseModel):
    """A Ray Tune trial scheduler that stops weak trials from their per-evaluation dev reports.
    One reported iteration = one dev evaluation (an epoch, or ``selection.every_steps`` steps)."""

    model_config = Strict
    name: Literal["asha", "median"]
    metric: str = Field(pattern=r"^dev_[A-Za-z0-9_@.]+$", description="a dev metric, e.g. dev_macro_f1")
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, le=10_000, description="evaluations every trial gets before it may stop")
    max_t: int | None = Field(None, ge=1, le=100_000, description="asha: evaluations after which it stops a trial "
                                                                  "itself (default: never; trials end with their epochs)")
    reduction_factor: float = Field(3.0, gt=1, le=100, allow_inf_nan=False, description="asha: keep 1/factor per rung")
    min_samples_required: int = Field(3, ge=1, le=10_000, description="median: trials needed before comparing")


class SearchConfig(BaseModel):
    model_config = Strict
    scheduler: SchedulerConfig | None = None
    space: dict[str, dict[Literal["loguniform", "uniform", "randint", "choice", "grid"], list]] = Field(default_factory=dict)
    samples: int = Field(1, ge=1, le=10_000)
    seed: int = SEED


class Resources(BaseModel):
    model_config = Strict
    cpu: float = Field(1.0, gt=0, le=4096)
    gpu: float = Field(0.0, ge=0, le=1024)


class PivotConfig(BaseModel):
    model_config = Strict
    rows: str
    columns: str
    value: str = "accuracy"
    extra_values: list[str] = Field(default_factory=list, description="more metrics, one pivot table each")


class LeaderboardConfig(BaseModel):
    model_config = Strict
    group_by: list[str] | None = None
    sort: str | None = None
    metrics: list[str] | None = None
    pivot: PivotConfig | None = None


class Suite(BaseModel):
    model_config = Strict
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    trial: dict[str, Any]
    matrix: dict[str, list | dict[str, Any]] = Field(default_factory=dict)
    search: SearchConfig | None = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1)
    leaderboard: LeaderboardConfig = Field(default_factory=LeaderboardConfig)
    reference: dict[str, dict[str, float]] = Field(default_factory=dict)
    reference_source: str = ""
    trackers: list[TrackerRef] = Field(default_factory=list, description="experiment trackers: tensorboard, mlflow, wandb")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        """The name is a folder under --out: '..' or a hidden name would land the run elsewhere."""
        if value.startswith("."):
            raise ValueError(f"'{value}' cannot start with '.' (it becomes the folder --out/{value})")
        return value


@dataclass(frozen=True)
class TrialSpec:
    key: str
    axes: dict[str, Any]
    hyper: dict[str, Any]
    config: dict[str, Any]

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in {**self.axes, **self.hyper}.items()]
        return " ".join(parts) or "(single trial)"


@dataclass
class LoadedSuite:
    path: Path
    suite: Suite
    trials: list[TrialSpec]
    text_hash: str
    raw: dict = field(default_factory=dict)

    @property
    def axes(self) -> list[str]:
        return list(self.suite.matrix) + list(self.suite.search.space if self.suite.search else [])


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise BenchError("suite file not found", file=path, fix="check the path; suites live in suites/")
    if path.is_dir():
        raise BenchError("this is a folder, not a suite file", file=path, fix="pass a .yaml file, e.g. suites/smoke.yaml")
    if path.stat().st_size > MAX_SUITE_BYTES:
        raise BenchError(f"suite file is {path.stat().st_size} bytes (at most {MAX_SUITE_BYTES})", file=path,
                         fix="a suite is a short YAML file; split it with include:")
    try:
        data = load_yaml_bounded(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError:
        raise BenchError("suite file is not UTF-8 text", file=path, fix="save the file as UTF-8") from None
    except RecursionError:
        raise BenchError("the YAML is nested too deeply", file=path, fix="a suite needs a few levels of nesting") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = str(getattr(exc, "problem", exc))
        fix = "indent with spaces: YAML does not allow tabs" if "'\\t'" in problem else \
            "fix the YAML syntax (indentation, colons, quotes)"
        raise BenchError(f"not valid YAML: {problem}", file=path, field=where, fix=fix) from None
    if not isinstance(data, dict):
        raise BenchError("a suite must be a YAML mapping with at least name, trial", file=path,
                         fix="start from suites/smoke.yaml")
    return data


MAX_SUITE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # a suite's expanded size; alias bombs (billion laughs) blow far past it


def load_yaml_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load, but anchors/aliases may not expand past MAX_YAML_NODES nodes or refer to themselves.

    safe_load shares an aliased node instead of copying it, so a billion-laughs file loads in
    microseconds and explodes later (hashing, deep copies, validation). The composed node graph
    is measured first, as the tree it stands for.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, path, {}, set())
            return loader.construct_document(node)
        return None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, path: Path, sizes: dict[int, int], open_nodes: set[int]) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise BenchError("an alias refers to the node that contains it (a recursive structure)", file=path,
                         field=f"line {node.start_mark.line + 1}", fix="remove the self-referring alias")
    open_nodes.add(key)
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(c, path, sizes, open_nodes) for c in children)
    open_nodes.discard(key)
    if size > MAX_YAML_NODES:
        raise BenchError(f"anchors and aliases expand to more than {MAX_YAML_NODES} values", file=path,
                         field=f"line {node.start_mark.line + 1}",
                         fix="a suite needs far fewer; remove the nested aliases (this looks like an alias bomb)")
    sizes[key] = size
    return size


def read_with_includes(path: Path, seen: tuple = ()) -> dict:
    data = read_yaml(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        if not isinstance(inc, str):
            raise BenchError(f"include entry {inc!r} is not a file path", file=path, field="include",
                             fix="write include: base.yaml or include: [base.yaml, data.yaml]")
        inc_path = (path.parent / inc).resolve()
        if not inc_path.is_file():
            raise BenchError(f"included file not found: {inc_path}", file=path, field="include",
                             fix="check the include path; it is relative to the including file's folder")
        if inc_path in seen:
            raise BenchError(f"include cycle through {inc}", file=path, field="include", fix="remove the cycle")
        merged = deep_merge(merged, read_with_includes(inc_path, seen + (path.resolve(),)))
    return deep_merge(merged, data)


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
    combos = itertools.product(*[axis_values(a, v, file) for a, v in axes]) if axes else [()]
    hyper_sets = sample_search(suite.search)
    trials: list[TrialSpec] = []
    for combo in combos:
        for hyper in hyper_sets:
            config = copy.deepcopy(suite.trial)
            labels = {}
            for (axis, _), (label, value) in zip(axes, combo):
                labels[axis] = label
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
            spec = _validate_trial(config, file, labels, registry)
            trials.append(TrialSpec(trial_key(spec), labels, hyper, spec))
    seen: dict[str, TrialSpec] = {}
    for t in trials:
        if t.key in seen:
            raise BenchError(f"two matrix entries give the same trial ({seen[t.key].label()} and {t.label()})",
                             file=file, field="matrix", fix="remove the duplicate axis value")
        seen[t.key] = t
    text_hash = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LoadedSuite(path=path, suite=suite, trials=trials, text_hash=text_hash, raw=raw)


def _validate_trial(config: dict, file: str, labels: dict, registry) -> dict:
    where = " ".join(f"{k}={v}" for k, v in labels.items())
    try:
        trial = TrialConfig.model_validate(config)
    except ValidationError as exc:
        suffix = f" (in the trial {where})" if where else ""
        raise BenchError(describe_validation_error(exc, TrialConfig, prefix="trial") + suffix, file=file,
                         fix="see docs/suites.md for every field and its allowed values") from None
    if registry is not None:
        check_plugins(trial, registry, file)
    from bench.trial_checks import check_trial  # cross-field checks (ssl labels, image-text matching)
    check_trial(trial, registry, file, where)
    return trial.model_dump(mode="json")


def plugin_refs(trial: TrialConfig) -> list[tuple[str, str, Ref]]:
    """(kind, field, ref) of every plugin a trial names, in build order."""
    refs = [("dataset", "trial.dataset", trial.dataset)]
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

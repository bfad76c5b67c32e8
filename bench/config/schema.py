"""The suite schema: pydantic models every suite and trial is validated against."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_serializer, field_validator, model_validator

from bench.trial.schedules import ScheduleName
from bench.reporting.trackers import TrackerName

# Unknown fields, inf and nan are refused everywhere: `epochs: .inf` would train forever, nan compares false.
Strict = ConfigDict(extra="forbid", allow_inf_nan=False)


def _not_yes_no(value):
    """pydantic reads True as 1: `seed: [yes, no]` would run seeds 1 and 0 without a word."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a yes/no value where a number is meant (YAML reads yes, no, "
                         "on, off, true and false as yes/no); write the number")
    return value


Int = Annotated[int, BeforeValidator(_not_yes_no)]
Float = Annotated[float, BeforeValidator(_not_yes_no)]
MAX_LR = 10.0  # far above any useful rate; 1e38 overflows float32 inside the optimizer
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
    """An experiment tracker fed by Ray Tune's logger callbacks (bench/reporting/trackers.py)."""

    name: TrackerName


class ObjectiveRef(Ref):
    weight: Float = Field(1.0, ge=0.0, le=1000.0, description="the loss is summed with this factor")


class OptimizerConfig(BaseModel):
    model_config = Strict
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: Float = Field(1e-4, gt=0, le=MAX_LR)
    head_lr: Float | None = Field(None, gt=0, le=MAX_LR, description=(
        "learning rate of everything but the encoders (default: max(lr, 1e-3), since a randomly "
        "initialised head at a fine-tuning rate such as 1e-4 does not converge in a few epochs)"))
    weight_decay: Float = Field(0.01, ge=0, le=100.0)

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
    epochs: Float = Field(1.0, gt=0, le=10_000)
    batch_size: Int = Field(32, ge=2, le=65_536)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    sampler: Literal["auto", "random", "pk", "balanced"] = "auto"
    pk_items: Int = Field(2, ge=2, le=1024, description="items per group in a P x K batch")
    grad_clip: Float | None = Field(1.0, gt=0, le=1e6)
    schedule: ScheduleName = Field("linear", description=(
        "learning-rate schedule after a 10% linear warm-up: linear (decay to 0), cosine (decay to 0) "
        "or constant (see bench/trial/schedules.py)"))


class SplitConfig(BaseModel):
    model_config = Strict
    fractions: dict[Literal["train", "dev", "test", "ssl"], Float] | None = None
    use_given: bool | None = None
    seed: Int = SEED


class EvalConfig(BaseModel):
    model_config = Strict
    k: Int = Field(10, ge=1, le=10_000)
    batch_size: Int = Field(64, ge=1, le=65_536)
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
    patience: Int | None = Field(5, ge=1, le=10_000, description="evaluations without improvement before stopping "
                                                                  "(null: never stop early)")
    min_delta: Float = Field(0.0, ge=0, allow_inf_nan=False)
    every_steps: Int | None = Field(None, ge=1, description="also evaluate every N training steps (long epochs)")


class TrialConfig(BaseModel):
    """Everything one trial needs; the suite's `trial` section after matrix overrides."""

    model_config = Strict
    dataset: Ref
    task: Ref = Field(default_factory=lambda: Ref(name="classification"),
                      description="a task plugin (bench plugins lists them): classification, retrieval, pairs ...")
    encoders: dict[Literal["text", "image", "joint"], Ref] = Field(min_length=1)
    fusion: Ref
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig()],
                                      description="[] evaluates the model as built (frozen or zero-shot)")
    splits: SplitConfig = Field(default_factory=SplitConfig)
    finetune_fraction: Float = Field(1.0, gt=0, le=1)
    seed: Int = SEED
    eval: EvalConfig = Field(default_factory=EvalConfig)
    max_trial_minutes: Float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    dataloader_workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = "auto"
    cache: bool = Field(True, description="cache preprocessed inputs and frozen-encoder features (content-addressed)")
    subset: Int | None = Field(None, ge=1, description="cap every split at this many items (smoke and CI runs)")
    selection: SelectionConfig | Literal["last"] = Field(
        default_factory=SelectionConfig,
        description="keep the dev-best epoch of the last stage (default), or `last` to keep the final weights")

    @field_serializer("task")
    def _task_as_written(self, task: Ref):
        """A task without options is stored as its name, as suites write it (trial keys stay put)."""
        return task.name if not task.options else {"name": task.name, "options": task.options}

    @field_validator("dataloader_workers", mode="before")
    @classmethod
    def _workers_not_yes_no(cls, value):
        return _not_yes_no(value)  # on the field: inside the union it would rename the error's location


class SchedulerConfig(BaseModel):
    """A Ray Tune trial scheduler that stops weak trials from their per-evaluation dev reports.
    One reported iteration = one dev evaluation (an epoch, or ``selection.every_steps`` steps)."""

    model_config = Strict
    name: Literal["asha", "median"]
    metric: str = Field(pattern=r"^dev_[A-Za-z0-9_@.]+$", description="a dev metric, e.g. dev_macro_f1")
    mode: Literal["max", "min"] = "max"
    grace_period: Int = Field(1, ge=1, le=10_000, description="evaluations every trial gets before it may stop")
    max_t: Int | None = Field(None, ge=1, le=100_000, description="asha: evaluations after which it stops a trial "
                                                                  "itself (default: never; trials end with their epochs)")
    reduction_factor: Float = Field(3.0, gt=1, le=100, allow_inf_nan=False, description="asha: keep 1/factor per rung")
    min_samples_required: Int = Field(3, ge=1, le=10_000, description="median: trials needed before comparing")


class SearchConfig(BaseModel):
    model_config = Strict
    scheduler: SchedulerConfig | None = None
    space: dict[str, dict[Literal["loguniform", "uniform", "randint", "choice", "grid"], list]] = Field(default_factory=dict)
    samples: Int = Field(1, ge=1, le=10_000)
    seed: Int = SEED


class Resources(BaseModel):
    model_config = Strict
    cpu: Float = Field(1.0, gt=0, le=4096)
    gpu: Float = Field(0.0, ge=0, le=1024)


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
    max_concurrent: Int | None = Field(None, ge=1)
    leaderboard: LeaderboardConfig = Field(default_factory=LeaderboardConfig)
    reference: dict[str, dict[str, Float]] = Field(default_factory=dict)
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



"""The small interfaces every plugin codes against (see docs/writing-a-plugin.md)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

TEXT, IMAGE, JOINT = "text", "image", "joint"
CLASSIFICATION, MATCHING = "classification", "matching"
PAIRS = "pairs"  # pair-labelled matching: labelled (left, right) item pairs, split by pair
# TaskInfo.kind: what the items of a trial carry, as the other plugins see it (a fusion builds a
# classification head for CLASSIFICATION, an objective needing pair batches runs under PAIRS).


@dataclass
class EncoderOutput:
    """sequence [B, N, D] (token or patch vectors), mask [B, N] (True = real token), pooled [B, D]."""

    sequence: Tensor
    mask: Tensor
    pooled: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class FusionOutput:
    """What a fusion returns for a batch.

    embedding: the vector used for retrieval [B, D].
    logits: class scores used for prediction [B, C] (None for embedding-only models).
    head_logits: by head name, the logits a classification loss trains instead of ``logits``, for a
        fusion whose prediction combines separately trained heads (late fusion: {"text", "image"});
        empty: the loss trains ``logits``.
    candidate_logits: by setting, the logits the fusion would predict under each setting
        ``fit_on_dev`` chooses among (the linear probe: one per C), so dev can choose without
        predicting again; empty for a fusion with nothing to choose.
    kinds: per-kind embeddings ("text", "image", "multimodal") for omni losses and max-of-kinds retrieval.
    """

    embedding: Tensor
    logits: Tensor | None = None
    head_logits: dict[str, Tensor] = field(default_factory=dict)
    candidate_logits: dict[str, Tensor] = field(default_factory=dict)
    kinds: dict[str, Tensor] = field(default_factory=dict)

    def trained_logits(self) -> list[Tensor]:
        """What a classification loss trains: the heads' logits, else ``logits`` (none: no head)."""
        if self.head_logits:
            return list(self.head_logits.values())
        return [self.logits] if self.logits is not None else []


@dataclass
class TaskInfo:
    kind: str  # CLASSIFICATION, MATCHING or PAIRS
    label_names: list[str]
    has_groups: bool

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class Batch:
    """A collated batch: per-modality encoder inputs, label and group indices (-1 = unknown)."""

    item_ids: list[str]
    inputs: dict[str, dict[str, Tensor]]
    labels: Tensor
    groups: Tensor
    titles: list[str] = field(default_factory=list)

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        moved = {m: {k: v.to(device, non_blocking=non_blocking) for k, v in d.items()}
                 for m, d in self.inputs.items()}
        return Batch(self.item_ids, moved, self.labels.to(device, non_blocking=non_blocking),
                     self.groups.to(device, non_blocking=non_blocking), self.titles)

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies can be asynchronous."""
        return Batch(self.item_ids,
                     {m: {k: v.pin_memory() for k, v in d.items()} for m, d in self.inputs.items()},
                     self.labels.pin_memory(), self.groups.pin_memory(), self.titles)

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class BuildContext:
    """Handed to every factory: what has been built so far and the trial's settings."""

    task: TaskInfo | None = None
    encoders: dict[str, "Encoder"] = field(default_factory=dict)
    fusion: "Fusion | None" = None
    seed: int = 0
    cache_dir: str | None = None


class Encoder(nn.Module):
    """A text, image or joint (single-stream) encoder.

    ``preprocess`` turns raw records into tensors (it runs in DataLoader workers, so keep it
    free of module state that cannot be pickled); ``forward`` returns an EncoderOutput.
    ``preprocess_fingerprint`` names everything that decides preprocess's output (cache key).

    Fitted encoders (a TF-IDF vocabulary, colour-histogram bins, BM25 statistics) learn from the
    training split before any stage. They override ``fit`` (train records only: never dev, test
    or ssl), ``load_fitted`` and ``fit_fingerprint``; the trial calls ``fit`` once, caches the
    returned state as safetensors keyed by the train split's content and ``fit_fingerprint``,
    and always applies it through ``load_fitted`` (a cache hit and a fresh fit take one path).
    ``preprocess_fingerprint`` must then include a digest of the fitted state, so no
    preprocessed-input or frozen-feature cache entry outlives the state it was built from.
    """

    modality: ClassVar[str] = TEXT
    dim: int

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        raise NotImplementedError

    def preprocess_fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def fit(self, train_records: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Learn from the training split; return the whole fitted state as named tensors
        (strings as UTF-8 JSON bytes: bench.trial.fitting.json_tensor). Must not change the encoder:
        the trial applies the state with ``load_fitted``. Default: nothing to learn."""
        return {}

    def load_fitted(self, state: dict[str, Tensor]) -> None:
        """Apply a state returned by ``fit`` (freshly computed or read from the cache)."""

    def fit_fingerprint(self) -> dict[str, Any]:
        """Everything besides the train records that decides ``fit``'s result (cache key)."""
        return {}

    def report(self) -> dict[str, Any]:
        """Values to record in the trial row (e.g. a fitted vocabulary's size)."""
        return {}


class Fusion(nn.Module):
    """Combines EncoderOutputs into a FusionOutput. ``requires``: modalities it reads."""

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_sequence: ClassVar[bool] = True  # False: only pooled vectors are read (smaller feature cache)
    # True: title and image interact inside the fusion (attention across them), so a score on its
    # multimodal vector can tell whether the two belong together; False: each side is kept apart
    # (or only one is read); None: not declared, so image-text matching is not refused on it.
    mixes_modalities: ClassVar[bool | None] = None

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:  # pragma: no cover
        raise NotImplementedError

    def fit_on_train(self, features: dict[str, Tensor], labels: Tensor) -> None:
        """Fit in closed form on the train split's pooled encoder vectors ({modality: [N, D]}) and
        labels (-1 = unknown), once, before the stages (e.g. the linear probe's sklearn fit).
        Only called when overridden; a fusion left with no trainable parameter makes every stage
        a no-op."""

    def fit_on_dev(self, outputs: FusionOutput, labels: Tensor, metric: str = "macro_f1") -> FusionOutput | None:
        """The dev-fitting hook: settle post-training choices on the dev split only, from its
        item labels (-1 = unknown) and ``outputs`` (the dev outputs as the fusion gives them now,
        ``head_logits`` and ``candidate_logits`` included), by ``metric`` ("accuracy" or
        "macro_f1", the suite's selection metric). Called by the classification task after
        every dev evaluation of the selected stage and once before test; never with test data.

        Return the dev outputs as the settled fusion gives them (late fusion: its combined
        logits under the chosen weight), or None when they cannot be derived from ``outputs``:
        the trial then runs the fusion on dev again. Only called when overridden."""

    def dev_choices(self, outputs: FusionOutput) -> Iterable[tuple[Any, FusionOutput]]:
        """Settings this fusion can take after training, each with the dev outputs it would give
        (from ``outputs``, the dev outputs as it gives them now), for the trial to choose among by
        its own selection metric, whatever the task (dev_pair_ap for pairs, dev_ndcg@k for
        matching, ...); the trial then calls ``choose_on_dev`` with the best (ties: the first).
        Default: nothing to choose."""
        return ()

    def choose_on_dev(self, setting: Any, metric: str) -> None:
        """Keep ``setting``, chosen among ``dev_choices`` on dev by ``metric``."""

    def report(self) -> dict[str, Any]:
        """Values to record in the trial row (e.g. the chosen late-fusion weight)."""
        return {}


@dataclass
class LossOutput:
    total: Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """A training loss. ``needs`` names what a batch must carry: any of
    "labels", "groups", and the modalities it encodes itself beyond the fusion's ("text", "image").
    ``loss(model, batch)`` may call ``model(batch)`` or the encoders directly (two dropout views ...).
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    sampler: ClassVar[str] = "random"  # "pk" for objectives that mine positives within a batch
    # True: the loss scores (title, image) pairs from the fusion's multimodal vector (image-text
    # matching), which is refused on a fusion that declares mixes_modalities = False.
    scores_title_image_pairs: ClassVar[bool] = False
    # Task pairs: True for a loss that scores a (left, right) pair jointly (a cross-encoder). Its
    # pair_scores then replaces the cosine of the two items' embeddings at evaluation, and dev
    # selection keeps and restores its weights with the model's.
    scores_pairs: ClassVar[bool] = False

    def loss(self, model: "nn.Module", batch: Batch) -> LossOutput:  # pragma: no cover
        raise NotImplementedError

    def pair_scores(self, model: "nn.Module", left: list[dict], right: list[dict]) -> Tensor:  # pragma: no cover
        """One match score per (left, right) record pair, higher = more alike (``scores_pairs`` only)."""
        raise NotImplementedError


class Task:
    """What a trial is asked to do, and how it is scored: the fifth plugin kind.

    The trial loop (bench/trial/session.py) builds the model from the suite, then asks its task:
    ``prepare`` the splits, the ``training_loader`` of each stage, the dev metrics that select the
    epoch (``selection_metric``), what is fitted on dev after training (``fit_on_dev``), the row's
    test metrics and the predictions kept beside it. The defaults are the item tasks'
    (classification and same-product retrieval, bench/trial/item_task.py): a task subclasses
    ``bench.trial.item_task.ItemTask`` and overrides what differs, e.g. its metrics
    (docs/writing-a-plugin.md, "Task").

    ``run`` is the trial (``bench.trial.session.TrialRun``): its ``cfg``, ``data``, ``model``,
    ``device``, ``predict(split)`` and ``eval_loader(records)``.
    """

    kind: ClassVar[str] = CLASSIFICATION  # TaskInfo.kind of its trials
    needs: ClassVar[str] = CLASSIFICATION  # what the catalogue must support (Catalog.tasks)
    main_metric: ClassVar[str] = "macro_f1"  # the headline test metric ("{k}" = eval.k)
    metrics: ClassVar[tuple[Any, ...]] = ()  # bench.metrics.registry.Metric declarations of its own columns

    def selection_metric(self, k: int) -> str:
        """The dev metric that picks the epoch unless ``selection.metric`` names another."""
        return "dev_" + self.main_metric.replace("{k}", str(k))

    def prepare(self, cfg, ctx):  # pragma: no cover - interface
        """The catalogue cut into the trial's splits: a ``bench.trial.prepare.TrialData``."""
        raise NotImplementedError

    def check_model(self, run) -> None:
        """Refuse, with a BenchError, a model this task cannot score (called once it is built)."""

    def stage_objectives(self, run, stage, index: int, objectives: list) -> None:
        """Told each stage's built objectives before the stage trains (pairs: which one scores pairs)."""

    def training_loader(self, run, stage, index: int, objectives: list, preprocessors):  # pragma: no cover
        """The stage's training batches; ``preprocessors(records)`` gives each modality's input function."""
        raise NotImplementedError

    def note_served(self, run, loader, steps: int) -> None:
        """Told how many batches of a stage's loader trained (for ``seen_shares``)."""

    def trained_modules(self, run) -> list[nn.Module]:
        """Modules besides the fusion and the trainable encoders whose weights the task's scores read
        (pairs: a cross-encoder's head): selection keeps and restores them with the model's."""
        return []

    def fit_on_dev(self, run, dev):
        """Settle post-training choices on the dev predictions; dev as the settled model gives it."""
        return dev

    def dev_metrics(self, run, dev) -> dict[str, float]:  # pragma: no cover - interface
        """The row's dev_* columns from dev predictions (``selection_metric`` among them)."""
        raise NotImplementedError

    def test_metrics(self, run, dev, test) -> dict[str, Any]:  # pragma: no cover - interface
        """The row's test columns (and dev ones scored once at the end); ``dev`` may be None."""
        raise NotImplementedError

    def prediction_table(self, run, key: str, test):  # pragma: no cover - interface
        """The test predictions stored beside the row (a polars DataFrame with ``trial_key``)."""
        raise NotImplementedError

    def seen_shares(self, run) -> dict[str, float | None]:
        """Row columns saying how much of the training data the stages served."""
        return {}

"""The pairs task: train on labelled (left, right) item pairs; score each pair by the cosine of its two embeddings, or by a cross-encoder objective.

Pair-labelled benchmarks (DeepMatcher, WDC Products) split pairs, not items: one item may sit
in a train pair and in a test pair. So:
- a split's items are the items its pairs name; only the train pairs' items reach fitted
  encoders (``Encoder.fit``) and the training batches, and only train pairs' labels reach an
  objective (a pair batch carries nothing else);
- the model selection metric (default ``dev_pair_ap``) and the F1 threshold come from the dev
  pairs; test pairs are scored once, at the end.

A training batch (``PairBatch``) holds the left items then the right items, so the trial's
encoders and fusion embed them as for any batch; item i and item i + P form pair i.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.catalog import Catalog
from bench.config.schema import TrialConfig
from bench.errors import BenchError
from bench.interfaces import PAIRS, Batch, Fusion, TaskInfo
from bench.metrics.pairs import average_precision, best_f1_threshold, pair_scores_at, predicted_matches
from bench.pair_table import PAIR_SPLITS
from bench.trial.device import autocast
from bench.trial.evaluate import Predictions
from bench.trial.output_checks import check_pair_scores
from bench.trial.prepare import TrialData, load_catalog
from bench.trial.records import make_loader, to_records
from bench.trial.session import TrialRun



@dataclass
class PairBatch(Batch):
    """Items of P pairs: the P left items, then the P right items; ``pair_labels`` [P] (1 = match)."""

    pair_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def to(self, device: torch.device, non_blocking: bool = False) -> "PairBatch":
        moved = super().to(device, non_blocking)
        return PairBatch(moved.item_ids, moved.inputs, moved.labels, moved.groups, moved.titles,
                         self.pair_labels.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "PairBatch":
        pinned = super().pin_memory()
        return PairBatch(pinned.item_ids, pinned.inputs, pinned.labels, pinned.groups, pinned.titles,
                         self.pair_labels.pin_memory())

    def __len__(self) -> int:  # samples are pairs (run_stage counts train_samples_per_s in pairs)
        return len(self.pair_labels)

    def halves(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(left rows, right rows) of a per-item tensor of this batch."""
        n = len(self.pair_labels)
        return tensor[:n], tensor[n:]


class PairCollate:
    """Runs the encoders' preprocess over a batch's left items, then its right items."""

    def __init__(self, preprocessors):
        self.preprocessors = preprocessors

    def __call__(self, pairs: list[dict[str, Any]]) -> PairBatch:
        records = [p["left"] for p in pairs] + [p["right"] for p in pairs]
        inputs = {m: fn(records) for m, fn in self.preprocessors.items()}
        unknown = torch.full((len(records),), -1, dtype=torch.long)
        return PairBatch(item_ids=[r["item_id"] for r in records], inputs=inputs, labels=unknown, groups=unknown.clone(),
                         titles=[r["title"] for r in records],
                         pair_labels=torch.tensor([p["label"] for p in pairs], dtype=torch.long))


def make_pair_loader(pairs: list[dict], preprocessors, *, batch_size: int, seed: int, workers: int = 0,
                     pin_memory: bool = False) -> DataLoader:
    """Shuffled batches of train pairs (batch_size pairs, so 2 x batch_size items)."""
    return make_loader(pairs, preprocessors, batch_size=batch_size, train=True, seed=seed, workers=workers,
                       pin_memory=pin_memory, collate=PairCollate(preprocessors))


@dataclass
class PairTrialData(TrialData):
    """TrialData whose splits hold the items each split's pairs name; ``pairs`` per split as
    (left_id, right_id, label) tuples."""

    pairs: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)


def take_pairs(frame: pl.DataFrame, cap: int | None, fraction: float, seed: int) -> pl.DataFrame:
    """A seeded sample: at most ``cap`` pairs (--subset), and ``fraction`` of them (train only)."""
    if cap is not None and frame.height > cap:
        frame = frame.sample(cap, seed=seed, shuffle=False)
    if fraction < 1.0:
        frame = frame.sample(max(1, round(frame.height * fraction)), seed=seed + 1, shuffle=False)
    return frame


def prepare_pair_data(cfg: TrialConfig, ctx, catalog: Catalog | None = None) -> PairTrialData:
    catalog = catalog or load_catalog(cfg, ctx)
    if PAIRS not in catalog.tasks:
        raise BenchError(f"dataset '{cfg.dataset.name}' has no labelled pairs in train and test "
                         f"(it supports: {', '.join(sorted(catalog.tasks)) or 'none'})", field="trial.task",
                         fix="task pairs needs a pair-labelled dataset (deepmatcher, wdc_products, or synthetic_catalog "
                             "with pairs: true); for this dataset use task: " +
                             (sorted(catalog.tasks)[0] if catalog.tasks else "classification"))
    records = {r["item_id"]: r for r in to_records(catalog.items, {}, {})}
    pairs, splits = {}, {}
    for split in PAIR_SPLITS:
        frame = catalog.pairs.filter(pl.col("split") == split)
        frame = take_pairs(frame, cfg.subset, cfg.finetune_fraction if split == "train" else 1.0, cfg.splits.seed)
        pairs[split] = list(zip(frame["left_id"].to_list(), frame["right_id"].to_list(), frame["label"].to_list()))
        ids = dict.fromkeys(i for left, right, _ in pairs[split] for i in (left, right))
        splits[split] = [records[i] for i in ids]
    splits["ssl"] = []
    if not any(label == 1 for *_, label in pairs["train"]):
        raise BenchError("no train pair is a match (label 1)", field="trial.dataset",
                         fix="the training pairs need matches as well as non-matches (a larger --subset may help)")
    return PairTrialData(catalog, TaskInfo(PAIRS, [], has_groups=False), splits, None, pairs)


def pair_similarities(predictions: Predictions, pairs: list[tuple[str, str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity of each pair's two embeddings, labels)."""
    index = {item: i for i, item in enumerate(predictions.item_ids)}
    emb = F.normalize(predictions.embedding.float(), dim=-1)
    left = emb[[index[a] for a, _, _ in pairs]]
    right = emb[[index[b] for _, b, _ in pairs]]
    return (left * right).sum(1).numpy().astype(float), np.array([label for *_, label in pairs], dtype=int)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


class PairTrialRun(TrialRun):
    """A TrialRun whose stages train on batches of labelled train pairs and whose metrics are pairwise."""

    data: PairTrialData

    def __init__(self, cfg: TrialConfig, ctx, data: PairTrialData):
        super().__init__(cfg, ctx, data)
        if type(self.model.fusion).fit_on_train is not Fusion.fit_on_train:
            raise BenchError(f"fusion '{cfg.fusion.name}' is fitted on item labels, which task pairs does not have",
                             field="trial.fusion.name", fix="use an embedding fusion (text_only, image_only, late ...)")
        self.served_pairs: set[tuple[str, str]] = set()
        self.pair_scorer = None  # an objective with scores_pairs (set per stage)
        self.scorer_notes: dict[str, Any] = {}  # what the scorer settled on the train pairs (e.g. pair_max_length)
        self.pair_row: dict[str, Any] = {}
        self.test_scores: np.ndarray | None = None

    def stage_objectives(self, stage, index: int) -> list:
        """As for any trial; an objective that scores pairs jointly (a cross-encoder) becomes the
        scorer while its stage is the latest trained (a later stage without one scores by cosine)."""
        objectives = super().stage_objectives(stage, index)
        scorers = [o for o, _ in objectives if o.scores_pairs]
        if len(scorers) > 1:
            raise BenchError(f"stage '{stage.name}' has {len(scorers)} objectives that score pairs; the pairs can be "
                             "scored one way only", field=f"trial.stages[{index}].objectives",
                             fix="keep one pair-scoring objective (e.g. pair_cross_encoder) in the stage")
        self.pair_scorer = scorers[0] if scorers else None
        return objectives

    def selector(self):
        """Dev selection also keeps the scorer's weights: its head is what scores the pairs."""
        selector = super().selector()
        if selector is not None and self.pair_scorer is not None:
            selector.modules.append(self.pair_scorer)
        return selector

    def pair_scores(self, split: str, predictions: Predictions) -> tuple[np.ndarray, np.ndarray]:
        """(score, label) of each pair of the split: the scorer's, else the embeddings' cosine."""
        pairs = self.data.pairs[split]
        if self.pair_scorer is None:
            return pair_similarities(predictions, pairs)
        by_id = {r["item_id"]: r for r in self.data.splits[split]}
        size, scores = self.cfg.eval.batch_size, []
        self.model.eval()
        self.pair_scorer.eval()
        with torch.no_grad(), autocast(self.device, self.cfg.amp):
            for start in range(0, len(pairs), size):
                chunk = pairs[start:start + size]
                found = self.pair_scorer.pair_scores(self.model, [by_id[a] for a, _, _ in chunk],
                                                     [by_id[b] for _, b, _ in chunk])
                check_pair_scores(found, plugin=f"objective '{type(self.pair_scorer).__name__}'", pairs=len(chunk))
                scores.append(found.float().cpu())
        labels = np.array([label for *_, label in pairs], dtype=int)
        return (torch.cat(scores).numpy().astype(float) if scores else np.zeros(0)), labels

    def stage_loader(self, stage, index: int, objectives: list, preprocessors):
        """Shuffled batches of the train pairs (every stage trains on them: suite checks refuse others)."""
        train_items = self.data.splits["train"]
        by_id = {r["item_id"]: r for r in train_items}
        self.pair_records = [{"left": by_id[a], "right": by_id[b], "label": label}
                             for a, b, label in self.data.pairs["train"]]
        if self.pair_scorer is not None and hasattr(self.pair_scorer, "fit_train_pairs"):
            self.scorer_notes.update(self.pair_scorer.fit_train_pairs(
                self.model, [p["left"]["title"] or "" for p in self.pair_records],
                [p["right"]["title"] or "" for p in self.pair_records]))
        return make_pair_loader(self.pair_records, preprocessors(train_items), batch_size=stage.batch_size,
                                seed=self.cfg.seed + index, **self.loader_kw)

    def note_served(self, loader, steps: int) -> None:
        for idx in loader.batch_sampler.served(steps):
            self.served_pairs.add((self.pair_records[idx]["left"]["item_id"], self.pair_records[idx]["right"]["item_id"]))

    def seen_shares(self) -> dict[str, float | None]:
        distinct = {(a, b) for a, b, _ in self.data.pairs["train"]}
        return {"train_pairs_seen_share": round(len(self.served_pairs & distinct) / len(distinct), 4) if distinct else None}

    def fit_on_dev(self, dev: Predictions) -> Predictions:
        """Nothing is fitted on dev item labels here (late fusion's weight is chosen by them, and
        pairs have none); the dev pairs choose the epoch, the threshold, and a fusion's setting
        offered by ``Fusion.dev_choices`` (hybrid_score's weight), by the selection metric."""
        return self.choose_on_dev(dev)

    def dev_metrics_of(self, dev: Predictions) -> dict[str, float]:
        return self.dev_columns(*self.pair_scores("dev", dev))[0]

    @staticmethod
    def dev_columns(scores: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float | None], float | None]:
        """dev_pair_ap and dev_pair_f1 (F1 at the threshold that is best on dev itself), and that threshold."""
        threshold, best_f1 = best_f1_threshold(scores, labels)
        return {"dev_pair_ap": _round(average_precision(scores, labels)), "dev_pair_f1": _round(best_f1)}, threshold

    def metrics(self, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        out = super().metrics(None, test)  # cost and count columns; the dev columns come with the pair figures
        out.update(self.pair_metrics(dev, test))
        return out

    def pair_metrics(self, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        """Dev figures and the dev-best threshold (the dev pairs scored once), then test pairwise
        precision / recall / F1 at that threshold, and test average precision."""
        threshold, note, dev_figures = None, None, {}
        if dev is None:
            note = "no dev pairs: the F1 threshold is chosen on dev"
        else:
            dev_figures, threshold = self.dev_columns(*self.pair_scores("dev", dev))
            if threshold is None:
                note = "no dev pair is a match: the F1 threshold cannot be chosen"
        scores, labels = self.pair_scores("test", test)
        self.test_scores = scores
        out: dict[str, Any] = {"pair_ap": _round(average_precision(scores, labels)), "pair_threshold": _round(threshold)}
        if threshold is None:
            out.update(pair_precision=None, pair_recall=None, pair_f1=None, pair_note=note)
        else:
            found = pair_scores_at(scores, labels, threshold)
            out.update({f"pair_{k}": _round(v) for k, v in found.items()})
            if found["precision"] is None and labels.sum():
                out["pair_note"] = "no test pair scores above the threshold: precision is undefined"
        if out["pair_ap"] is None:
            out["pair_note"] = "; ".join(filter(None, [out.get("pair_note"), "no test pair is a match: no average "
                                                       "precision, precision, recall or F1"]))
        out.update({f"n_{split}_pairs": len(self.data.pairs[split]) for split in PAIR_SPLITS})
        out["n_test_pair_matches"] = int(labels.sum())
        out.update(self.scorer_notes)
        out.update(dev_figures)
        self.pair_row = out
        return out

    def prediction_table(self, key: str, test: Predictions) -> pl.DataFrame:
        """Each test pair with its score, and the prediction at the row's threshold (null without one)."""
        pairs = self.data.pairs["test"]
        threshold = self.pair_row.get("pair_threshold")
        return pl.DataFrame({
            "trial_key": [key] * len(pairs), "left_id": [a for a, _, _ in pairs], "right_id": [b for _, b, _ in pairs],
            "label": [label for *_, label in pairs], "score": self.test_scores,
            "predicted": None if threshold is None else predicted_matches(self.test_scores, threshold),
        }, schema={"trial_key": pl.Utf8, "left_id": pl.Utf8, "right_id": pl.Utf8, "label": pl.Int8,
                   "score": pl.Float64, "predicted": pl.Int8})

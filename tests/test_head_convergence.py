"""Default stage settings train a head on frozen features to convergence (real torch, run_stage),
and the learning-rate schedules do what bench/trial/schedules.py says."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from bench.api.interfaces import Batch, Encoder
from bench.trial.model import BenchModel
from bench.trial.schedules import SCHEDULES, lr_factor
from bench.config.schema import OptimizerConfig, StageConfig
from bench.trial.train import run_stage
from mic_bench_plugins.fusions.heads import HeadOptions
from mic_bench_plugins.fusions.unimodal import UnimodalFusion
from mic_bench_plugins.objectives.cross_entropy import CrossEntropy, CrossEntropyOptions

N_LABELS, DIM, N = 6, 48, 384


class FeatureLoader:
    """Batches of frozen (cached) pooled features, reshuffled every epoch."""

    def __init__(self, x, y, batch_size, seed=0):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.y), generator=self.g)
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            yield Batch([str(int(k)) for k in idx], {"text": {"cached_pooled": self.x[idx]}}, self.y[idx],
                        torch.full((len(idx),), -1))


def separable_features():
    """Linearly separable, MiniLM-scaled features (~0.3 per dimension): a class mean plus noise."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(N_LABELS, DIM, generator=g) * 0.3
    y = torch.arange(N) % N_LABELS
    x = means[y] + torch.randn(N, DIM, generator=g) * 0.05
    return x, y


def train_head(stage: StageConfig, head: HeadOptions) -> float:
    """Train a text_only head through run_stage; return the full training-set loss afterwards."""
    torch.manual_seed(0)
    x, y = separable_features()
    model = BenchModel({"text": Encoder()}, UnimodalFusion("text", DIM, N_LABELS, head))
    run_stage(model, [(CrossEntropy(CrossEntropyOptions(), N_LABELS), 1.0)], FeatureLoader(x, y, stage.batch_size),
              stage, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.fusion.head(x), y))


def test_default_stage_trains_a_linear_head_to_near_zero_loss():
    stage = StageConfig(epochs=40)  # 480 steps; everything else as a suite gets it without saying
    assert stage.optimizer.head_lr == 1e-3 and stage.schedule == "linear" and HeadOptions().hidden == 0
    assert train_head(stage, HeadOptions()) < 0.05


def test_old_defaults_underfit_the_same_head():
    """The settings before (head at the encoders' 1e-4, no input norm) stay far from converged."""
    stage = StageConfig(epochs=40, optimizer=OptimizerConfig(head_lr=1e-4))
    assert train_head(stage, HeadOptions(norm=False)) > 0.5


def test_head_lr_defaults_to_at_least_1e_3_and_keeps_what_is_set():
    assert OptimizerConfig().head_lr == 1e-3
    assert OptimizerConfig(lr=5e-3).head_lr == 5e-3
    assert OptimizerConfig(lr=5e-5, head_lr=2e-4).head_lr == 2e-4


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_warm_up_then_follow_their_shape(name):
    total = 100
    f = lr_factor(name, total)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)  # 10 warm-up steps
    ends = {"linear": 0.0, "cosine": 0.0, "constant": 1.0}
    assert f(total) == pytest.approx(ends[name], abs=1e-9)
    mid = {"linear": (100 - 55) / 90, "cosine": 0.5, "constant": 1.0}
    assert f(55) == pytest.approx(mid[name])
    values = [f(s) for s in range(10, total + 1)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))  # never rises after warm-up


def test_schedule_is_a_stage_field_and_drives_run_stage():
    with pytest.raises(ValidationError):
        StageConfig(schedule="step")
    x, y = separable_features()
    lrs = {}
    for name in SCHEDULES:
        model = BenchModel({"text": Encoder()}, UnimodalFusion("text", DIM, N_LABELS, HeadOptions()))
        captured = []
        original = torch.optim.lr_scheduler.LambdaLR.step

        def spy(self, *args, **kwargs):
            original(self, *args, **kwargs)
            captured.append(self.optimizer.param_groups[0]["lr"])

        torch.optim.lr_scheduler.LambdaLR.step = spy
        try:
            run_stage(model, [(CrossEntropy(CrossEntropyOptions(), N_LABELS), 1.0)], FeatureLoader(x, y, 32),
                      StageConfig(epochs=2, schedule=name), torch.device("cpu"))
        finally:
            torch.optim.lr_scheduler.LambdaLR.step = original
        lrs[name] = captured[-2]  # the rate of the last optimizer step
    assert lrs["constant"] == pytest.approx(1e-3)
    assert lrs["linear"] < 2e-4 and lrs["cosine"] < 1e-4


@pytest.mark.parametrize("smoothing, weighted", [(0.0, False), (0.1, True)])
def test_cross_entropy_ignores_unknown_labels_as_a_masked_loss_would(smoothing, weighted):
    """Items with label -1 add nothing: the loss equals cross-entropy over the known items alone
    (with class weights and label smoothing)."""
    torch.manual_seed(0)
    x, y = separable_features()
    y = y.clone()
    y[::3] = -1
    model = BenchModel({"text": Encoder()}, UnimodalFusion("text", DIM, N_LABELS, HeadOptions())).eval()  # no dropout
    objective = CrossEntropy(CrossEntropyOptions(class_weighted=weighted, label_smoothing=smoothing), N_LABELS)
    if weighted:
        objective.set_label_counts(torch.bincount(y[y >= 0], minlength=N_LABELS).float())
    batch = Batch([str(i) for i in range(N)], {"text": {"cached_pooled": x}}, y, torch.full((N,), -1))
    got = objective.loss(model, batch).total
    known = y >= 0
    logits = model(batch).logits
    expected = torch.nn.functional.cross_entropy(logits[known], y[known], label_smoothing=smoothing,
                                                 weight=objective.class_weights if weighted else None)
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_train_mode_never_wakes_a_frozen_encoder():
    """model.train() switches the fusion and trainable encoders; a frozen encoder stays in eval mode
    (its dropout off, its outputs cacheable), and model.eval() reaches everything."""
    class Frozen(Encoder):
        def __init__(self):
            super().__init__()
            self.frozen = True
            self.drop = torch.nn.Dropout(0.5)

    trainable = Encoder()
    trainable.inner = torch.nn.Dropout(0.5)
    model = BenchModel({"text": Frozen(), "image": trainable}, UnimodalFusion("text", DIM, N_LABELS, HeadOptions()))
    model.train()
    assert model.training and model.fusion.training and trainable.training and trainable.inner.training
    assert not model.encoders["text"].training and not model.encoders["text"].drop.training
    model.eval()
    assert not any(m.training for m in model.modules())
    model.encoders["text"].train()  # someone woke it: the next train() puts it back
    model.train()
    assert not model.encoders["text"].drop.training

"""contrastive, triplet and omni: each loss against a loop-by-loop computation, mining, limits, gradients."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np

import pytest
import torch
from torch import nn

from bench.trial.records import Collate, PKSampler, make_loader, served_item_ids
from bench.errors import BenchError
from bench.api.interfaces import Batch, BuildContext, FusionOutput, TaskInfo
from bench.metrics.retrieval import retrieval_metrics
from bench.config.schema import TrialConfig
from bench.trial.build import build_model
from bench.trial.context import TrialContext
from conftest import tiny_trial
from mic_bench_plugins.objectives.metric_learning import (EmbeddingLoss, MetricOptions, Omni, OmniOptions,
                                                           contrastive_loss, hardest, pair_masks, triplet_loss)

# a hand-made batch: two products of two listings and one of three, plus one of unknown product
EMB = torch.tensor([[0.0, 0.0], [0.3, 0.4], [2.0, 0.0], [2.0, 0.5], [0.0, 0.8], [0.1, 0.2], [0.5, 0.5], [1.0, 1.0]])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 2, -1])


def _d(a, b):
    return math.dist(a.tolist(), b.tolist())


def _pairs(groups, cross=False):
    n = len(groups)
    for i, j in itertools.product(range(n), range(n)):
        same = bool(groups[i] >= 0 and groups[i] == groups[j])
        if cross:
            yield i, j, same or i == j
        elif i != j:
            yield i, j, same


def _direct_contrastive(x, y, groups, m=1.0, cross=False):
    pos = [_d(x[i], y[j]) ** 2 for i, j, p in _pairs(groups, cross) if p]
    neg = [max(m - _d(x[i], y[j]), 0.0) ** 2 for i, j, p in _pairs(groups, cross) if not p]
    return sum(pos) / len(pos) + sum(neg) / len(neg)


def _hardest_direct(x, y, groups, i, cross=False):
    pos = [(_d(x[i], y[j]), j) for a, j, p in _pairs(groups, cross) if a == i and p]
    neg = [(_d(x[i], y[j]), j) for a, j, p in _pairs(groups, cross) if a == i and not p]
    return (max(pos) if pos else None), (min(neg) if neg else None)


def test_contrastive_all_pairs_matches_direct_computation():
    got = contrastive_loss(EMB, EMB, GROUPS, margin=1.0, mining="all")
    assert float(got) == pytest.approx(_direct_contrastive(EMB, EMB, GROUPS), rel=1e-5)


def test_contrastive_hard_pairs_matches_direct_computation():
    pos_terms, neg_terms = [], []
    for i in range(len(GROUPS)):
        p, n = _hardest_direct(EMB, EMB, GROUPS, i)
        if p:
            pos_terms.append(p[0] ** 2)
        if n:
            neg_terms.append(max(1.0 - n[0], 0.0) ** 2)
    want = sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)
    assert float(contrastive_loss(EMB, EMB, GROUPS, mining="hard")) == pytest.approx(want, rel=1e-5)


def test_triplet_batch_hard_matches_direct_computation():
    terms = []
    for i in range(len(GROUPS)):
        p, n = _hardest_direct(EMB, EMB, GROUPS, i)
        if p and n:
            terms.append(max(1.0 + p[0] - n[0], 0.0))
    assert len(terms) == 7  # the unknown-product listing has no positive, so it is no anchor
    assert float(triplet_loss(EMB, EMB, GROUPS, mining="hard")) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_triplet_all_triplets_matches_direct_computation():
    terms = []
    for a in range(len(GROUPS)):
        for (_, p, is_p), (_, n, is_n) in itertools.product([t for t in _pairs(GROUPS) if t[0] == a], repeat=2):
            if is_p and not is_n:
                terms.append(max(1.0 + _d(EMB[a], EMB[p]) - _d(EMB[a], EMB[n]), 0.0))
    assert float(triplet_loss(EMB, EMB, GROUPS, mining="all")) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_cross_kind_losses_count_the_listing_itself_as_positive():
    other = EMB.flip(1) + 0.1
    p_mask, n_mask = pair_masks(GROUPS, cross_kind=True)
    assert p_mask.diagonal().all() and not (p_mask & n_mask).any()
    assert p_mask[7].sum() == 1  # the unknown-product listing: only its own other-kind vector
    assert float(contrastive_loss(EMB, other, GROUPS, mining="all", cross_kind=True)) == pytest.approx(
        _direct_contrastive(EMB, other, GROUPS, cross=True), rel=1e-5)
    terms = []
    for i in range(len(GROUPS)):
        p, n = _hardest_direct(EMB, other, GROUPS, i, cross=True)
        terms.append(max(1.0 + p[0] - n[0], 0.0))
    assert float(triplet_loss(EMB, other, GROUPS, cross_kind=True)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_unknown_products_are_never_positives():
    positive, negative = pair_masks(torch.tensor([-1, -1, 0, 0]))
    assert not positive[0].any() and not positive[:, 1].any()
    assert negative[0, 1] and positive[2, 3] and not positive[2, 2] and not negative[2, 2]


def test_mining_picks_the_farthest_positive_and_closest_negative():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.9, 0.0], [0.0, 0.3], [0.0, 2.0]])
    groups = torch.tensor([0, 0, 0, 1, 1])
    far, near, has_pos, has_neg = hardest(torch.cdist(points, points), *pair_masks(groups))
    assert far.tolist() == [2, 2, 0, 4, 3] and near.tolist() == [3, 3, 3, 0, 0]
    assert has_pos.all() and has_neg.all()
    # batch-hard: candidate 1 is nobody's hardest positive or negative, so it gets no gradient
    anchors, candidates = points.clone().requires_grad_(True), points.clone().requires_grad_(True)
    triplet_loss(anchors, candidates, groups).backward()
    assert candidates.grad[1].abs().sum() == 0
    assert all(candidates.grad[j].abs().sum() > 0 for j in (0, 2, 3, 4))
    # with every triplet, candidate 1 counts too
    candidates.grad = None
    triplet_loss(anchors, candidates, groups, mining="all").backward()
    assert candidates.grad[1].abs().sum() > 0


@pytest.mark.parametrize("mining,swapped_triplet,swapped_contrastive", [("hard", 3.0, 5.0), ("all", 2.0, 4.5)])
def test_losses_zero_when_perfect_and_large_when_swapped(mining, swapped_triplet, swapped_contrastive):
    perfect = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])  # products 2 apart, listings equal
    right, swapped = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert float(triplet_loss(perfect, perfect, right, mining=mining)) == pytest.approx(0.0, abs=1e-5)
    assert float(contrastive_loss(perfect, perfect, right, mining=mining)) == pytest.approx(0.0, abs=1e-5)
    # swapped: each anchor's positive is 2 away, one negative 0 away and one 2 away.
    # hard: 1 + 2 - 0 = 3 and 2^2 + 1^2 = 5; all: mean(3, 1) = 2 and 4 + mean(1, 0) = 4.5
    assert float(triplet_loss(perfect, perfect, swapped, mining=mining)) == pytest.approx(swapped_triplet, abs=1e-4)
    assert float(contrastive_loss(perfect, perfect, swapped, mining=mining)) == pytest.approx(swapped_contrastive, abs=1e-4)


def test_batch_without_positives_gives_zero_loss_that_still_backpropagates():
    x = torch.randn(4, 3, requires_grad=True)
    loss = triplet_loss(x, x, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None


class FixedOutputs(nn.Module):
    """A model whose outputs are trainable tables: isolates the objective from any encoder."""

    def __init__(self, kinds: dict[str, torch.Tensor]):
        super().__init__()
        self.kinds = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in kinds.items()})

    def forward(self, batch):
        kinds = dict(self.kinds.items())
        return FusionOutput(embedding=kinds["multimodal"], kinds=kinds)


def _batch(groups):
    return Batch([f"i{i}" for i in range(len(groups))], {}, torch.full((len(groups),), -1), groups)


def test_embedding_objectives_normalise_by_default():
    model = FixedOutputs({"multimodal": EMB[:7] * 5 + 0.1})
    batch = _batch(GROUPS[:7])
    obj = EmbeddingLoss("triplet", MetricOptions())
    unit = torch.nn.functional.normalize(EMB[:7] * 5 + 0.1, dim=-1)
    assert float(obj.loss(model, batch).total.detach()) == pytest.approx(float(triplet_loss(unit, unit, GROUPS[:7])), rel=1e-5)
    raw = EmbeddingLoss("contrastive", MetricOptions(normalize=False, mining="all")).loss(model, batch)
    assert float(raw.total.detach()) == pytest.approx(_direct_contrastive(EMB[:7] * 5 + 0.1, EMB[:7] * 5 + 0.1, GROUPS[:7]), rel=1e-5)
    assert obj.sampler == "pk" and obj.needs == {"groups"}


def test_omni_pairs_and_mean_of_terms():
    g = torch.Generator().manual_seed(0)
    kinds = {k: torch.randn(8, 4, generator=g) for k in ("text", "image", "multimodal")}
    model, batch = FixedOutputs(kinds), _batch(GROUPS)
    widths = {"embedding": 4, "text": 4, "image": 4, "multimodal": 4}
    unit = {k: torch.nn.functional.normalize(v, dim=-1) for k, v in kinds.items()}
    only = Omni(OmniOptions(), widths)
    assert len(list(only.parameters())) == 0  # equal widths: nothing to project
    assert float(only.loss(model, batch).total.detach()) == pytest.approx(
        float(triplet_loss(unit["multimodal"], unit["multimodal"], GROUPS)), rel=1e-5)
    all9 = Omni(OmniOptions(kinds="all9", loss="contrastive"), widths)
    out = all9.loss(model, batch)
    want = [float(contrastive_loss(unit[a], unit[b], GROUPS, cross_kind=a != b))
            for a in ("text", "image", "multimodal") for b in ("text", "image", "multimodal")]
    assert float(out.total.detach()) == pytest.approx(sum(want) / 9, rel=1e-5)
    assert out.parts["omni_text_image"] == pytest.approx(want[1], rel=1e-5)
    listed = Omni(OmniOptions(kinds=[["text", "image"]]), widths)
    assert float(listed.loss(model, batch).total.detach()) == pytest.approx(
        float(triplet_loss(unit["text"], unit["image"], GROUPS, cross_kind=True)), rel=1e-5)


def test_omni_options_reject_unknown_kinds_and_empty_lists(registry):
    spec = registry.get("objective", "omni")
    with pytest.raises(BenchError):
        spec.parse_options({"kinds": [["text", "audio"]]})
    with pytest.raises(BenchError):
        spec.parse_options({"kinds": []})


@pytest.fixture(scope="module")
def matching_task():
    return TaskInfo("matching", [], has_groups=True)


def _model(registry, task, fusion):
    return build_model(TrialConfig.model_validate(tiny_trial(task="matching", fusion=fusion)),
                       TrialContext(registry=registry), task)


RECORDS = [{"item_id": f"i{i}", "title": t, "image": None, "label": -1, "group": g} for i, (t, g) in enumerate(
    [("acme red kettle", 0), ("red kettle acme 1 pc", 0), ("nova soft blanket", 1), ("soft blanket nova xl", 1)])]


def test_omni_projects_kinds_of_other_widths_on_a_real_late_fusion(registry, matching_task):
    model = _model(registry, matching_task, "late")  # multimodal = [text; image], twice as wide
    spec = registry.get("objective", "omni")
    ctx = BuildContext(task=matching_task, encoders=dict(model.encoders.items()), fusion=model.fusion)
    omni = spec.build({"kinds": "all9"}, ctx)
    assert set(omni.projections) == {"text", "image"}
    assert omni.projections["text"].weight.shape == (128, 64)
    batch = Collate({m: model.encoders[m].preprocess for m in ("text", "image")})(RECORDS)
    out = omni.loss(model, batch)
    out.total.backward()
    assert torch.isfinite(out.total) and len(out.parts) == 10
    assert omni.projections["image"].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["text"].parameters())


def test_omni_names_the_missing_kind(registry, matching_task):
    model = _model(registry, matching_task, "text_only")
    spec = registry.get("objective", "omni")
    ctx = BuildContext(task=matching_task, encoders=dict(model.encoders.items()), fusion=model.fusion)
    with pytest.raises(BenchError, match="multimodal") as err:
        spec.build({}, ctx)
    assert err.value.field == "objectives.omni.options.kinds"


@pytest.mark.parametrize("name", ["triplet", "contrastive"])
def test_gradients_reach_the_text_encoder(registry, matching_task, name):
    model = _model(registry, matching_task, "text_only")
    spec = registry.get("objective", name)
    objective = spec.build({}, BuildContext(task=matching_task))
    batch = Collate({"text": model.encoders["text"].preprocess})(RECORDS)
    objective.loss(model, batch).total.backward()
    grads = [p.grad for p in model.encoders["text"].parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_training_with_triplet_loss_separates_products():
    g = torch.Generator().manual_seed(1)
    groups = torch.arange(8).repeat_interleave(4)
    model = FixedOutputs({"multimodal": torch.randn(32, 8, generator=g)})
    objective = EmbeddingLoss("triplet", MetricOptions())
    before = retrieval_metrics(model.kinds["multimodal"].detach(), groups.numpy(), k=3)["mar@3"]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        objective.loss(model, _batch(groups)).total.backward()
        opt.step()
    after = retrieval_metrics(model.kinds["multimodal"].detach(), groups.numpy(), k=3)
    assert before < 0.5 and after["mar@3"] == pytest.approx(1.0) and after["ndcg@3"] == pytest.approx(1.0)
    assert float(objective.loss(model, _batch(groups)).total.detach()) < 0.05


def random_groups(rng: np.random.Generator) -> list[int]:
    """Products of 1 to 9 listings, some listings with no product, in random order."""
    groups, g = [], 0
    target = int(rng.integers(40, 300))
    while len(groups) < target:
        size = int(rng.integers(1, 10))
        if rng.random() < 0.3:
            groups += [-1] * size
        else:
            groups += [g] * size
            g += 1
    return rng.permutation(groups).tolist()


def test_pk_sampler_serves_every_item_each_epoch_in_batches_with_positives():
    rng = np.random.default_rng(0)
    for case in range(30):
        groups = random_groups(rng)
        k, batch_size = int(rng.integers(2, 5)), int(rng.integers(8, 64))
        sizes = Counter(g for g in groups if g >= 0)
        multi = {g for g, n in sizes.items() if n >= 2}
        lone = [i for i, g in enumerate(groups) if g < 0 or sizes[g] == 1]
        sampler = PKSampler(groups, batch_size, k, seed=case)
        epochs = [list(sampler) for _ in range(2)]
        assert epochs[0] != epochs[1]  # a new order each epoch
        for batches in epochs:
            assert len(batches) == len(sampler)
            served = Counter(i for b in batches for i in b)
            assert set(served) == set(range(len(groups))), case  # ungrouped and single-listing items too
            assert all(served[i] == 1 for i in lone)  # extras once each
            for b in batches:
                per_group = Counter(groups[i] for i in b if groups[i] in multi)
                assert len(per_group) >= min(2, len(multi)), case  # P >= 2 products
                assert all(n >= k for n in per_group.values()), case  # K listings each: positives for mining
                assert len(b) <= max(batch_size, 2 * k) + k + 1, (case, len(b), batch_size, k)


def test_pk_sampler_refuses_data_without_products_of_two_listings():
    with pytest.raises(BenchError, match="2\\+ listings"):
        PKSampler([-1, -1, 0, 1, 2], batch_size=4, k=2, seed=0)


def _index_records(groups):
    return [{"item_id": f"i{i}", "title": "t", "image": None, "label": i % 3, "group": g} for i, g in enumerate(groups)]


def _index_feeder(records):
    return {"x": torch.tensor([int(r["item_id"][1:]) for r in records])}


@pytest.mark.parametrize("sampler", ["pk", "random", "balanced"])
def test_served_items_are_those_of_the_batches_used_even_when_workers_fetch_ahead(sampler):
    records = _index_records(random_groups(np.random.default_rng(3)))
    loader = make_loader(records, {"text": _index_feeder}, batch_size=8, train=True, sampler=sampler, seed=1,
                         workers=1)
    used = []
    for step, batch in enumerate(loader):  # the trainer's loop: a batch is fetched, then the step count checked
        if step == 3:
            break
        used.append(batch.item_ids)
    assert len(loader.batch_sampler.yielded) > 4  # the worker was handed batches that were never used
    assert served_item_ids(loader, 3) == {i for ids in used for i in ids}


def _seen_share_row(registry, stage):
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialSpec
    from bench.trial.run import run_trial

    config = TrialConfig.model_validate(tiny_trial(task="matching", stages=[stage])).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    return row


def test_the_row_records_the_share_of_train_items_training_served(registry):
    base = {"objectives": ["triplet"], "batch_size": 16, "optimizer": {"lr": 1e-3}}
    row = _seen_share_row(registry, {**base, "epochs": 1})
    assert row["train_items_seen_share"] == 1.0  # P x K: every item once per epoch
    half = _seen_share_row(registry, {**base, "epochs": 0.5, "sampler": "random"})
    n, bs = half["n_train"], 16
    steps = math.ceil(0.5 * (n // bs))  # shuffled batches without repeats within the epoch
    assert half["train_items_seen_share"] == pytest.approx(round(steps * bs / n, 4))


def test_in_batch_negatives_matches_a_loop_over_anchors():
    from mic_bench_plugins.objectives.metric_learning import in_batch_negatives_loss

    emb = torch.nn.functional.normalize(EMB + 0.1, dim=-1)
    scale = 20.0
    terms = []
    for i in range(len(GROUPS)):
        positives = [j for j in range(len(GROUPS)) if j != i and GROUPS[i] >= 0 and GROUPS[j] == GROUPS[i]]
        if not positives:
            continue  # the unknown product's listing has no positive: left out
        others = [j for j in range(len(GROUPS)) if j != i]
        sim = lambda j: scale * float(emb[i] @ emb[j])  # noqa: E731
        terms.append(-math.log(sum(math.exp(sim(j)) for j in positives) / sum(math.exp(sim(j)) for j in others)))
    got = in_batch_negatives_loss(emb, emb, GROUPS, scale)
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    none = in_batch_negatives_loss(emb, emb, torch.tensor([0, 1, 2, 3, 4, 5, 6, -1]), scale)
    assert float(none) == 0.0  # no listing has a positive in this batch


def test_in_batch_negatives_is_a_registered_objective_that_trains(registry, matching_task):
    objective = registry.create("objective", "in_batch_negatives", {}, BuildContext(task=matching_task), field="x")
    assert objective.sampler == "pk" and objective.needs == {"groups"}
    emb = torch.nn.Parameter(torch.randn(8, 4))
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    class Fixed(nn.Module):
        def forward(self, batch):
            return FusionOutput(embedding=emb)

    batch = Batch(item_ids=[str(i) for i in range(8)], inputs={}, labels=groups.clone(), groups=groups)
    before = objective.loss(Fixed(), batch).total.item()
    optimizer = torch.optim.SGD([emb], lr=0.5)
    for _ in range(30):
        optimizer.zero_grad()
        objective.loss(Fixed(), batch).total.backward()
        optimizer.step()
    assert objective.loss(Fixed(), batch).total.item() < before / 2

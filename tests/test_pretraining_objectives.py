"""itm / vtm, mlm (whole-word masking) and the VT-BERT objectives mrfr, gmlm, gmrfr.

Each loss is recomputed directly (same random draws, dropout off) from the encoder's outputs;
masking proportions are checked statistically; gradients must reach encoder and heads.
"""
from __future__ import annotations

import pytest
import torch

from bench.trial.records import Collate
from bench.errors import BenchError
from bench.api.interfaces import BuildContext, TaskInfo
from bench.config.schema import TrialConfig
from bench.trial.build import build_model
from bench.trial.context import TrialContext
from conftest import tiny_trial
from mic_bench_plugins.objectives.image_text_matching import choose_donors, swap_titles
from mic_bench_plugins.objectives.masking import IGNORE, random_patch_mask, whole_word_mask

JOINT = {"name": "single_stream", "options": {"img_size": 32, "patch_size": 8, "max_length": 24}}
TITLES = ["acme red kettle with headphones", "nova soft blanket xl", "zento cordless drill set",
          "lumina slim wallet leather", "orbit sunglasses polarized", "kora scented candle pack of 3"]
RECORDS = [{"item_id": f"i{i}", "title": t, "image": None, "label": -1, "group": i // 2} for i, t in enumerate(TITLES)]
MASK_ID, VOCAB = 103, 30522


@pytest.fixture(scope="module")
def task():
    return TaskInfo("matching", [], has_groups=True)


def _model(registry, task, **overrides):
    cfg = tiny_trial(task="matching", encoders={"joint": JOINT}, fusion="single_stream_head")
    cfg.update(overrides)
    return build_model(TrialConfig.model_validate(cfg), TrialContext(registry=registry), task)


def _objective(registry, task, model, name, **options):
    spec = registry.get("objective", name)
    ctx = BuildContext(task=task, encoders=dict(model.encoders.items()), fusion=model.fusion)
    return spec.build(options, ctx)


def _batch(model, slots=None):
    slots = slots or sorted(model.fusion.requires)
    batch = Collate({m: model.encoders[m].preprocess for m in slots})(RECORDS)
    g = torch.Generator().manual_seed(0)
    for m in slots:  # distinct images, so image-text pairs differ
        if "pixels" in batch.inputs[m]:
            batch.inputs[m]["pixels"] = torch.randn(batch.inputs[m]["pixels"].shape, generator=g)
    return batch


@pytest.fixture(scope="module")
def joint_model(registry, task):
    return _model(registry, task).eval()  # eval: no dropout, so a loss can be recomputed exactly


# -- whole-word masking -------------------------------------------------------------------------

def _synthetic_words(rows=64, words=200, seed=0):
    """Rows of [CLS] w0 w1 ... [SEP] [PAD]...; each word is 1-3 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids, wids = [], []
    for r in range(rows):
        row_ids, row_w = [101], [-1]
        n_words = words - (r % 7)  # rows of different lengths
        for w in range(n_words):
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                row_ids.append(int(torch.randint(1000, 30000, (1,), generator=g)))
                row_w.append(w)
        row_ids.append(102)
        row_w.append(-1)
        ids.append(row_ids)
        wids.append(row_w)
    width = max(map(len, ids))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in ids])
    wids = torch.tensor([r + [-1] * (width - len(r)) for r in wids])
    return ids, wids


def _word_outcomes(ids, wids, masked, labels):
    """Per (row, word): (chosen?, treatment) and check that every token of a word agrees."""
    outcomes = []
    for r in range(ids.shape[0]):
        for w in wids[r].unique().tolist():
            if w < 0:
                continue
            at = wids[r] == w
            chosen = (labels[r][at] != IGNORE)
            assert chosen.all() or not chosen.any(), "a word was only partly chosen"
            if not chosen.any():
                assert torch.equal(masked[r][at], ids[r][at])
                outcomes.append((False, None))
                continue
            assert torch.equal(labels[r][at], ids[r][at])
            is_mask = masked[r][at] == MASK_ID
            kept = masked[r][at] == ids[r][at]
            if is_mask.all():
                outcomes.append((True, "mask"))
            elif kept.all():
                outcomes.append((True, "kept"))
            else:
                assert not is_mask.any(), "a word mixed [MASK] and other tokens"
                outcomes.append((True, "random"))
    return outcomes


def test_whole_word_masking_proportions_on_long_text():
    ids, wids = _synthetic_words()
    masked, labels = whole_word_mask(ids, wids, mask_token_id=MASK_ID, vocab_size=VOCAB,
                                     generator=torch.Generator().manual_seed(1))
    outcomes = _word_outcomes(ids, wids, masked, labels)
    chosen = [t for c, t in outcomes if c]
    assert len(chosen) / len(outcomes) == pytest.approx(0.15, abs=0.005)  # rounded per title
    for treatment, share in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
        assert chosen.count(treatment) / len(chosen) == pytest.approx(share, abs=0.03), treatment
    assert (labels[wids < 0] == IGNORE).all() and (masked[wids < 0] == ids[wids < 0]).all()


def test_whole_word_masking_each_title_gets_rounded_share_and_at_least_one_word():
    ids, wids = _synthetic_words(rows=3, words=4)  # 4, 3 and 2 words: 15% rounds to 1 (at least one)
    _, labels = whole_word_mask(ids, wids, mask_token_id=MASK_ID, vocab_size=VOCAB)
    for r in range(3):
        assert len(wids[r][labels[r] != IGNORE].unique()) == 1
    empty = torch.full((2, 5), -1)
    masked, labels = whole_word_mask(torch.zeros(2, 5, dtype=torch.long), empty, mask_token_id=MASK_ID, vocab_size=VOCAB)
    assert (labels == IGNORE).all() and (masked == 0).all()


def test_real_tokenizer_words_are_masked_together(joint_model):
    encoder = joint_model.encoders["joint"]
    inputs = encoder.preprocess([{"title": "headphones sunglasses unbreakable", "image": None}] * 200)
    wids = inputs["word_ids"]
    assert (wids[0] == 0).sum() > 1  # "headphones" is several word pieces
    masked, labels = whole_word_mask(inputs["input_ids"], wids, mask_token_id=encoder.mask_token_id,
                                     vocab_size=VOCAB, word_fraction=0.34)
    outcomes = _word_outcomes(inputs["input_ids"], wids, masked, labels)
    assert sum(c for c, _ in outcomes) == 200  # one of three words per title


def test_patch_mask_counts():
    mask = random_patch_mask(5, 49, 0.15)
    assert mask.shape == (5, 49) and (mask.sum(1) == 7).all()
    assert (random_patch_mask(3, 4, 0.15).sum(1) == 1).all()
    assert random_patch_mask(200, 16, 0.25).float().mean(0).min() > 0.1  # every position gets masked sometimes


# -- ITM -----------------------------------------------------------------------------------------

def test_donors_swap_half_and_never_the_same_product():
    groups = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1, 3, 3])
    for seed in range(20):
        donors = choose_donors(groups, 0.5, torch.Generator().manual_seed(seed))
        swapped = donors != torch.arange(10)
        assert swapped.sum() == 5
        assert not ((groups[donors] == groups) & (groups >= 0) & swapped).any()
    assert torch.equal(choose_donors(torch.zeros(6, dtype=torch.long)), torch.arange(6))  # one product: no swap
    unknown = choose_donors(torch.tensor([-1, -1]), 0.5, torch.Generator().manual_seed(0))
    assert (unknown != torch.arange(2)).sum() == 1  # unknown products may donate to each other


def test_swap_titles_moves_only_the_title(joint_model):
    batch = _batch(joint_model)
    donors = torch.tensor([1, 0, 2, 3, 4, 5])
    swapped = swap_titles(batch, "joint", donors)
    joint, orig = swapped.inputs["joint"], batch.inputs["joint"]
    assert torch.equal(joint["input_ids"][0], orig["input_ids"][1]) and torch.equal(joint["word_ids"][1], orig["word_ids"][0])
    assert torch.equal(joint["pixels"], orig["pixels"])


def test_itm_loss_matches_direct_computation(registry, task, joint_model):
    itm = _objective(registry, task, joint_model, "itm")
    batch = _batch(joint_model)
    torch.manual_seed(3)
    out = itm.loss(joint_model, batch)
    torch.manual_seed(3)
    donors = choose_donors(batch.groups, 0.5)
    assert (donors != torch.arange(6)).sum() == 3
    cls = joint_model.encoders["joint"](swap_titles(batch, "joint", donors).inputs["joint"]).pooled
    logits = cls @ itm.head.weight.T + itm.head.bias
    target = (donors == torch.arange(6)).long()
    direct = -torch.log_softmax(logits, 1)[torch.arange(6), target].mean()
    assert float(out.total.detach()) == pytest.approx(float(direct.detach()), rel=1e-5)
    assert 0.0 <= out.parts["itm_accuracy"] <= 1.0


def test_itm_on_a_two_stream_fusion_and_its_errors(registry, task):
    model = build_model(TrialConfig.model_validate(tiny_trial(task="matching", fusion="shallow")),
                        TrialContext(registry=registry), task)
    itm = _objective(registry, task, model, "itm")
    assert itm.slot == "text" and itm.head.in_features == 128  # [h0; v0] of two 64-wide encoders
    out = itm.loss(model, _batch(model))
    out.total.backward()
    assert itm.head.weight.grad.abs().sum() > 0
    text_only = build_model(TrialConfig.model_validate(tiny_trial(task="matching", fusion="text_only")),
                            TrialContext(registry=registry), task)
    with pytest.raises(BenchError, match="itm") as err:
        _objective(registry, task, text_only, "itm")
    assert err.value.field == "trial.fusion.name"


# -- MLM -----------------------------------------------------------------------------------------

def _direct_mlm(objective, encoder, inputs, seed):
    torch.manual_seed(seed)
    masked, labels = whole_word_mask(inputs["input_ids"], inputs["word_ids"], mask_token_id=encoder.mask_token_id,
                                     vocab_size=objective.decoder.vocab_size)
    seq = encoder({**inputs, "input_ids": masked}).sequence
    words = encoder.get_input_embeddings().weight if hasattr(encoder, "get_input_embeddings") \
        else encoder.model.get_input_embeddings().weight
    losses = []
    for r, t in (labels != IGNORE).nonzero().tolist():
        logits = objective.transform(seq[r, t]) @ words.T + objective.decoder.bias
        losses.append(-torch.log_softmax(logits, 0)[labels[r, t]])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("slot", ["joint", "text"])
def test_mlm_matches_direct_computation_with_tied_decoder(registry, task, joint_model, slot):
    model = joint_model if slot == "joint" else build_model(
        TrialConfig.model_validate(tiny_trial(task="matching", fusion="text_only")), TrialContext(registry=registry), task).eval()
    mlm = _objective(registry, task, model, "mlm")
    assert mlm.slot == slot and mlm.needs == {slot}
    assert mlm.decoder.tied and mlm.decoder.weight is None
    objective_params = {id(p) for p in mlm.parameters()}
    assert not objective_params & {id(p) for p in model.encoders[slot].parameters()}  # optimizer sees each once
    batch = _batch(model, [slot])
    torch.manual_seed(5)
    got = mlm.loss(model, batch).total
    want = _direct_mlm(mlm, model.encoders[slot], batch.inputs[slot], 5)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-4)
    assert float(got.detach()) > 5.0  # untrained: about log(vocab) ~ 10
    got.backward()
    assert model.encoders[slot].get_input_embeddings().weight.grad.abs().sum() > 0 if slot == "joint" else \
        model.encoders[slot].model.get_input_embeddings().weight.grad.abs().sum() > 0
    assert mlm.decoder.bias.grad.abs().sum() > 0


def test_untied_decoder_option(registry, task, joint_model):
    mlm = _objective(registry, task, joint_model, "mlm", tie_weights=False)
    assert not mlm.decoder.tied and mlm.decoder.weight.shape == (VOCAB, 64)
    with pytest.raises(BenchError):
        registry.get("objective", "mlm").parse_options({"mask_prob": 0.95, "random_prob": 0.1})


# -- VT-BERT -------------------------------------------------------------------------------------

def test_mrfr_matches_direct_computation(registry, task, joint_model):
    mrfr = _objective(registry, task, joint_model, "mrfr")
    encoder = joint_model.encoders["joint"]
    batch = _batch(joint_model)
    inputs = batch.inputs["joint"]
    torch.manual_seed(7)
    got = mrfr.loss(joint_model, batch).total
    torch.manual_seed(7)
    mask = random_patch_mask(6, 16, 0.15)
    assert (mask.sum(1) == 2).all()
    out = encoder({**inputs, "patch_mask": mask})
    n_text = inputs["input_ids"].shape[1]
    pixels = inputs["pixels"]
    errors = []
    for r, p in mask.nonzero().tolist():
        row, col = divmod(p, 4)
        target = pixels[r, :, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8].reshape(-1)
        errors.append(((mrfr.head(out.sequence[r, n_text + p]) - target) ** 2).mean())
    assert float(got.detach()) == pytest.approx(float(torch.stack(errors).mean().detach()), rel=1e-5)


def test_gmrfr_predicts_from_cls_plus_patch_position(registry, task, joint_model):
    gmrfr = _objective(registry, task, joint_model, "gmrfr")
    encoder = joint_model.encoders["joint"]
    batch = _batch(joint_model)
    torch.manual_seed(8)
    got = gmrfr.loss(joint_model, batch).total
    torch.manual_seed(8)
    mask = random_patch_mask(6, 16, 0.15)
    cls = encoder({**batch.inputs["joint"], "patch_mask": mask}).pooled
    target = encoder.patchify(batch.inputs["joint"]["pixels"])
    errors = [((gmrfr.out(gmrfr.predictor(cls[r] + encoder.image_positions[0, p])) - target[r, p]) ** 2).mean()
              for r, p in mask.nonzero().tolist()]
    assert float(got.detach()) == pytest.approx(float(torch.stack(errors).mean().detach()), rel=1e-5)
    layers = [m for m in gmrfr.predictor.modules() if isinstance(m, (torch.nn.Linear, torch.nn.GELU, torch.nn.LayerNorm))]
    assert [type(m).__name__ for m in layers] == ["Linear", "GELU", "LayerNorm"] * 2


def test_gmlm_predicts_from_cls_plus_token_position(registry, task, joint_model):
    gmlm = _objective(registry, task, joint_model, "gmlm")
    encoder = joint_model.encoders["joint"]
    batch = _batch(joint_model)
    inputs = batch.inputs["joint"]
    torch.manual_seed(9)
    got = gmlm.loss(joint_model, batch).total
    torch.manual_seed(9)
    masked, labels = whole_word_mask(inputs["input_ids"], inputs["word_ids"], mask_token_id=encoder.mask_token_id,
                                     vocab_size=VOCAB)
    cls = encoder({**inputs, "input_ids": masked}).pooled
    words = encoder.get_input_embeddings().weight
    pos = encoder.bert.embeddings.position_embeddings.weight
    losses = []
    for r, t in (labels != IGNORE).nonzero().tolist():
        logits = gmlm.predictor(cls[r] + pos[t]) @ words.T + gmlm.decoder.bias
        losses.append(-torch.log_softmax(logits, 0)[labels[r, t]])
    assert float(got.detach()) == pytest.approx(float(torch.stack(losses).mean().detach()), rel=1e-4)


@pytest.mark.parametrize("name", ["vtm", "mrfr", "gmlm", "gmrfr", "mlm", "itm"])
def test_gradients_reach_encoder_and_heads(registry, task, name):
    model = _model(registry, task).train()
    objective = _objective(registry, task, model, name)
    objective.loss(model, _batch(model)).total.backward()
    encoder = model.encoders["joint"]
    assert encoder.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    own = [p for p in objective.parameters()]
    assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    if name in ("mrfr", "gmrfr"):
        assert encoder.mask_patch.grad.abs().sum() > 0  # the learned [MASK] patch trains
    if name in ("gmlm",):
        assert encoder.bert.embeddings.position_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["vtm", "mrfr", "gmlm", "gmrfr"])
def test_vt_bert_objectives_need_the_single_stream_encoder(registry, task, name):
    model = build_model(TrialConfig.model_validate(tiny_trial(task="matching", fusion="shallow")),
                        TrialContext(registry=registry), task)
    with pytest.raises(BenchError, match="single_stream") as err:
        _objective(registry, task, model, name)
    assert err.value.field == "trial.encoders"


def test_vt_bert_stage_trains_in_a_real_trial(registry):
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialSpec
    from bench.trial.run import run_trial

    stage = {"objectives": [{"name": "vtm", "weight": 1}, {"name": "mlm", "weight": 0.1},
                            {"name": "gmlm", "weight": 0.1}, {"name": "mrfr", "weight": 0.01},
                            {"name": "gmrfr", "weight": 0.01}], "epochs": 1, "batch_size": 8,
             "optimizer": {"lr": 1e-3}}
    cfg = tiny_trial(task="matching", encoders={"joint": JOINT}, fusion="single_stream_head", stages=[stage],
                     eval={"retrieval": "max_of_kinds"})
    row = run_trial(TrialSpec(trial_key(cfg), {}, {}, cfg), TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert 0.0 <= row["mar@10"] <= 1.0 and row["loss_train"] > 0

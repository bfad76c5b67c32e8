"""The single-stream (ViLT-style) encoder and its fusion single_stream_head, in real trials too."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.api.interfaces import BuildContext
from bench.config.matrix import trial_key
from bench.config.schema import TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import tiny_trial
from mic_bench_plugins.encoders.single_stream import SingleStreamEncoder, SingleStreamOptions
from mic_bench_plugins.fusions.heads import HeadOptions
from mic_bench_plugins.fusions.single_stream_head import SingleStreamHead

TINY = {"img_size": 32, "patch_size": 8, "max_length": 16}
JOINT = {"name": "single_stream", "options": TINY}


@pytest.fixture(scope="module")
def encoder():
    return SingleStreamEncoder(SingleStreamOptions(**TINY)).eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        path = folder / f"{name}.png"
        Image.new("RGB", (40, 40), colour).save(path)
        paths.append(str(path))
    return paths


def _records(titles, images):
    return [{"item_id": f"i{i}", "title": t, "image": im} for i, (t, im) in enumerate(zip(titles, images))]


def test_preprocess_gives_tokens_and_pixels(encoder, images):
    inputs = encoder.preprocess(_records(["acme red kettle", "nova blanket"], images))
    assert set(inputs) == {"input_ids", "attention_mask", "word_ids", "pixels"}
    assert inputs["pixels"].shape == (2, 3, 32, 32)
    assert inputs["word_ids"][0, 0] == -1 and inputs["word_ids"][0, 1] == 0
    red = inputs["pixels"][0, :, 16, 16]
    assert red[0] > 0.5 and red[2] < -0.5  # normalised with mean = std = 0.5
    assert encoder.preprocess_fingerprint()["image"]["size"] == 32


def test_sequence_layout_pooled_and_kinds(encoder, images):
    inputs = encoder.preprocess(_records(["acme red kettle", "nova soft blanket with a long title"], images))
    out = encoder(inputs)
    n_text = inputs["input_ids"].shape[1]
    assert out.sequence.shape == (2, n_text + 16, 64) and encoder.n_patches == 16
    assert torch.equal(out.mask[:, :n_text], inputs["attention_mask"].bool()) and out.mask[:, n_text:].all()
    assert torch.equal(out.pooled, out.sequence[:, 0]) and torch.equal(out.extras["joint"], out.pooled)
    real = inputs["attention_mask"][0].bool()
    assert torch.allclose(out.extras["text"][0], out.sequence[0, :n_text][real].mean(0), atol=1e-6)
    assert torch.allclose(out.extras["image"][1], out.sequence[1, n_text:].mean(0), atol=1e-6)


def test_padding_does_not_change_outputs(encoder, images):
    short = _records(["acme kettle"], images[:1])
    both = _records(["acme kettle", "a much longer title with many more word pieces"], images)
    alone, padded = encoder(encoder.preprocess(short)), encoder(encoder.preprocess(both))
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)
    assert torch.allclose(alone.extras["text"][0], padded.extras["text"][0], atol=1e-5)


def test_one_transformer_attends_across_modalities(encoder, images):
    a = encoder(encoder.preprocess(_records(["acme kettle"], images[:1])))
    other_image = encoder(encoder.preprocess(_records(["acme kettle"], images[1:])))
    other_title = encoder(encoder.preprocess(_records(["nova drill"], images[:1])))
    assert not torch.allclose(a.sequence[:, :-16], other_image.sequence[:, :-16], atol=1e-4)  # text sees image
    assert not torch.allclose(a.sequence[:, -16:], other_title.sequence[:, -16:], atol=1e-4)  # image sees text


def test_masking_every_patch_hides_the_image(encoder, images):
    inputs = [encoder.preprocess(_records(["acme kettle"], [im])) for im in images]
    everything = torch.ones(1, 16, dtype=torch.bool)
    red, blue = (encoder({**i, "patch_mask": everything}) for i in inputs)
    assert torch.allclose(red.pooled, blue.pooled, atol=1e-6)
    assert not torch.allclose(encoder(inputs[0]).pooled, encoder(inputs[1]).pooled, atol=1e-4)


def test_patchify_is_row_major_channel_first(encoder):
    pixels = torch.randn(2, 3, 32, 32)
    patches = encoder.patchify(pixels)
    assert patches.shape == (2, 16, 3 * 8 * 8)
    assert torch.equal(patches[1, 6], pixels[1, :, 8:16, 16:24].reshape(-1))  # row 1, column 2


def test_modality_type_embeddings_differ_and_train(images):
    enc = SingleStreamEncoder(SingleStreamOptions(**TINY))
    out = enc(enc.preprocess(_records(["acme kettle", "nova drill"], images)))
    (out.pooled * torch.randn(out.pooled.shape)).sum().backward()  # a plain sum is flat after LayerNorm
    grad = enc.modality_type.weight.grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert not torch.allclose(enc.modality_type.weight[0], enc.modality_type.weight[1])


def test_initialised_from_the_packaged_minilm(registry):
    ctx = BuildContext()
    joint = registry.get("encoder", "single_stream")
    enc = joint.build({"model": "packaged:all-minilm-l6-v2", "img_size": 32, "patch_size": 16}, ctx)
    text = registry.get("encoder", "hf_text")
    ref = text.build({"model": "packaged:all-minilm-l6-v2"}, ctx)
    assert enc.dim == 384 and len(enc.bert.encoder.layer) == 6
    assert torch.equal(enc.bert.embeddings.word_embeddings.weight, ref.model.embeddings.word_embeddings.weight)
    assert torch.equal(enc.bert.encoder.layer[5].output.dense.weight, ref.model.encoder.layer[5].output.dense.weight)


def test_options_errors_and_freezing():
    with pytest.raises(BenchError, match="multiple of patch_size") as err:
        SingleStreamEncoder(SingleStreamOptions(img_size=30, patch_size=8))
    assert err.value.field == "encoders.joint.options.img_size"
    frozen = SingleStreamEncoder(SingleStreamOptions(**TINY, freeze="all"))
    assert frozen.frozen and not any(p.requires_grad for p in frozen.parameters())
    last = SingleStreamEncoder(SingleStreamOptions(**TINY, freeze="last_n", train_last_n=1))
    trainable = {n.split(".")[3] for n, p in last.named_parameters() if p.requires_grad}
    assert not last.frozen and trainable == {"1"}  # only the last transformer layer


def test_fusion_head_fills_kinds(encoder, images):
    fusion = SingleStreamHead(encoder.dim, 3, HeadOptions())
    features = {"joint": encoder(encoder.preprocess(_records(["acme kettle", "nova drill"], images)))}
    out = fusion(features)
    assert out.logits.shape == (2, 3) and torch.equal(out.embedding, features["joint"].pooled)
    assert set(out.kinds) == {"text", "image", "multimodal"}
    assert torch.equal(out.kinds["image"], features["joint"].extras["image"])
    features["joint"].extras.clear()  # e.g. features from a cache that kept only the pooled vector
    assert set(fusion(features).kinds) == {"multimodal"}


def _run(cfg, registry):
    return run_trial(TrialSpec(trial_key(cfg), {}, {}, cfg), TrialContext(registry=registry)).row


def test_classification_trial(registry):
    row = _run(tiny_trial(encoders={"joint": JOINT}, fusion="single_stream_head"), registry)
    assert row["status"] == "ok", row["error"]
    assert 0.0 <= row["accuracy"] <= 1.0 and row["n_trainable_params"] > 0


def test_matching_trial_scores_by_max_of_kinds(registry):
    stage = {"objectives": [{"name": "omni", "options": {"kinds": "all9"}}], "epochs": 1, "batch_size": 8,
             "optimizer": {"lr": 1e-3}}
    base = tiny_trial(task="matching", encoders={"joint": JOINT}, fusion="single_stream_head", stages=[stage])
    by_kinds = _run({**base, "eval": {"retrieval": "max_of_kinds"}}, registry)
    by_cls = _run({**base, "eval": {"retrieval": "embedding"}}, registry)
    for row in (by_kinds, by_cls):
        assert row["status"] == "ok", row["error"]
    assert by_kinds["loss_train"] == by_cls["loss_train"]  # same training, different scoring
    assert {"ndcg@10", "mar@10", "map@10", "f1"} <= set(by_kinds)

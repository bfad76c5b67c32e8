"""Every fusion: forward/backward on tiny encoders; cross-modal masking and gate; late fusion's a on dev."""
from __future__ import annotations

import pytest
import torch

from bench.interfaces import BuildContext, EncoderOutput, TaskInfo
from bench.suite import TrialConfig
from bench.trial import TrialContext, build_model
from conftest import tiny_trial

FUSIONS = ["text_only", "image_only", "late", "late_avg_embedding", "shallow", "cross_modal_gated_attention"]
RECORDS = [{"item_id": f"i{i}", "title": t, "image": None, "label": i, "group": -1} for i, t in
           enumerate(["acme red kettle", "nova soft blanket with a very long title indeed", "mini drill", "slim wallet"])]


@pytest.fixture(scope="module")
def task():
    return TaskInfo("classification", [f"l{i}" for i in range(5)], has_groups=False)


def _batch_inputs(model):
    from bench.data import Collate

    return Collate({m: model.encoders[m].preprocess for m in ("text", "image")})(RECORDS)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_backward(fusion, registry, task):
    cfg = TrialConfig.model_validate(tiny_trial(fusion=fusion))
    model = build_model(cfg, TrialContext(registry=registry), task)
    batch = _batch_inputs(model)
    out = model(batch)
    assert out.logits.shape == (4, 5) and out.embedding.shape[0] == 4
    assert torch.isfinite(out.logits).all()
    loss = sum(torch.nn.functional.cross_entropy(p, torch.tensor([0, 1, 2, 3])) for p in out.logits_parts)
    loss.backward()
    grads = [p.grad for p in model.fusion.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _cross_modal(registry, task, **options):
    spec = registry.get("fusion", "cross_modal_gated_attention")
    enc = {"text": type("E", (), {"dim": 16})(), "image": type("E", (), {"dim": 12})()}
    fusion = spec.factory(spec.parse_options({"heads": 2, "dropout": 0.0, **options}),
                          BuildContext(task=task, encoders=enc))
    return fusion.eval()


def _features(n_text=5, n_pad=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(2, n_text, 16, generator=g)
    image = torch.randn(2, 7, 12, generator=g)
    mask = torch.ones(2, n_text, dtype=torch.bool)
    if n_pad:
        text = torch.cat([text, torch.randn(2, n_pad, 16, generator=g) * 100], 1)
        mask = torch.cat([mask, torch.zeros(2, n_pad, dtype=torch.bool)], 1)
    return {"text": EncoderOutput(text, mask, text[:, 0]),
            "image": EncoderOutput(image, torch.ones(2, 7, dtype=torch.bool), image.mean(1))}


def test_cross_modal_shapes(registry, task):
    out = _cross_modal(registry, task)(_features())
    assert out.logits.shape == (2, 5) and out.embedding.shape == (2, 16)
    assert set(out.kinds) == {"text", "image", "multimodal"}


def test_cross_modal_padding_changes_nothing(registry, task):
    fusion = _cross_modal(registry, task)
    plain = fusion(_features())
    padded = fusion(_features(n_pad=3))
    assert torch.allclose(plain.logits, padded.logits, atol=1e-5)
    assert torch.allclose(plain.embedding, padded.embedding, atol=1e-5)


def test_cross_modal_gate_can_switch_the_image_path_off(registry, task):
    fusion = _cross_modal(registry, task)
    a, b = _features(seed=1), _features(seed=2)
    b["text"] = a["text"]  # same text, different image
    assert not torch.allclose(fusion(a).logits, fusion(b).logits, atol=1e-4)
    with torch.no_grad():
        fusion.gate_image.bias.fill_(-1e4)  # VG -> 0
    assert torch.allclose(fusion(a).logits, fusion(b).logits, atol=1e-6)


def test_late_fusion_alpha_is_chosen_on_the_given_split(registry, task):
    spec = registry.get("fusion", "late")
    enc = {"text": type("E", (), {"dim": 8})(), "image": type("E", (), {"dim": 8})()}
    late = spec.factory(spec.parse_options({}), BuildContext(task=task, encoders=enc))
    labels = torch.tensor([0, 1, 2, 3])
    right = torch.nn.functional.one_hot(labels, 5).float() * 2  # right but less confident
    wrong = torch.nn.functional.one_hot((labels + 1) % 5, 5).float() * 5
    from bench.interfaces import FusionOutput

    late.fit_on_dev(FusionOutput(torch.zeros(4, 2), logits_parts=[right, wrong]), labels)  # text right on "dev"
    assert late.report()["late_alpha"] > 0.5
    late.fit_on_dev(FusionOutput(torch.zeros(4, 2), logits_parts=[wrong, right]), labels)  # image right
    assert late.report()["late_alpha"] < 0.5


def test_late_fusion_trial_reports_alpha_and_never_sees_test(registry, monkeypatch):
    """fit_on_dev receives the dev split's items only: at each dev evaluation and once at the end."""
    from bench.suite import load_suite
    from mic_bench_plugins.fusions import late as late_mod
    from bench.trial import run_trial

    seen = []
    original = late_mod.LateFusion.fit_on_dev

    def spy(self, outputs, labels):
        seen.append(len(labels))
        return original(self, outputs, labels)

    monkeypatch.setattr(late_mod.LateFusion, "fit_on_dev", spy)
    import yaml, tempfile, pathlib

    path = pathlib.Path(tempfile.mkdtemp()) / "late.yaml"
    path.write_text(yaml.safe_dump({"name": "late", "trial": tiny_trial(fusion="late")}))
    spec = load_suite(path, registry).trials[0]
    row = run_trial(spec, TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert seen == [row["n_dev"]] * (row["n_evaluations"] + 1) and 0.0 <= row["late_alpha"] <= 1.0

"""Every fusion: forward/backward on tiny encoders; cross-modal masking and gate; late fusion's a on dev."""
from __future__ import annotations

import pytest
import torch

from bench.api.interfaces import BuildContext, EncoderOutput, TaskInfo
from bench.config.schema import TrialConfig
from bench.trial.build import build_model
from bench.trial.context import TrialContext
from conftest import tiny_trial

FUSIONS = ["text_only", "image_only", "late", "late_avg_embedding", "shallow", "cross_modal_gated_attention"]
RECORDS = [{"item_id": f"i{i}", "title": t, "image": None, "label": i, "group": -1} for i, t in
           enumerate(["acme red kettle", "nova soft blanket with a very long title indeed", "mini drill", "slim wallet"])]


@pytest.fixture(scope="module")
def task():
    return TaskInfo("classification", [f"l{i}" for i in range(5)], has_groups=False)


def _batch_inputs(model):
    from bench.trial.records import Collate

    return Collate({m: model.encoders[m].preprocess for m in ("text", "image")})(RECORDS)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_backward(fusion, registry, task):
    cfg = TrialConfig.model_validate(tiny_trial(fusion=fusion))
    model = build_model(cfg, TrialContext(registry=registry), task)
    batch = _batch_inputs(model)
    out = model(batch)
    assert out.logits.shape == (4, 5) and out.embedding.shape[0] == 4
    assert torch.isfinite(out.logits).all()
    loss = sum(torch.nn.functional.cross_entropy(p, torch.tensor([0, 1, 2, 3])) for p in out.trained_logits())
    loss.backward()
    grads = [p.grad for p in model.fusion.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _cross_modal(registry, task, **options):
    spec = registry.get("fusion", "cross_modal_gated_attention")
    enc = {"text": type("E", (), {"dim": 16})(), "image": type("E", (), {"dim": 12})()}
    fusion = spec.build({"heads": 2, "dropout": 0.0, **options},
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
    late = spec.build({}, BuildContext(task=task, encoders=enc))
    labels = torch.tensor([0, 1, 2, 3])
    right = torch.nn.functional.one_hot(labels, 5).float() * 2  # right but less confident
    wrong = torch.nn.functional.one_hot((labels + 1) % 5, 5).float() * 5
    from bench.api.interfaces import FusionOutput

    late.fit_on_dev(FusionOutput(torch.zeros(4, 2), head_logits={"text": right, "image": wrong}), labels)  # text right on "dev"
    assert late.report()["late_alpha"] > 0.5
    late.fit_on_dev(FusionOutput(torch.zeros(4, 2), head_logits={"text": wrong, "image": right}), labels)  # image right
    assert late.report()["late_alpha"] < 0.5


def test_late_fusion_trial_reports_alpha_and_never_sees_test(registry, monkeypatch):
    """fit_on_dev receives the dev split's items only: at each dev evaluation and once at the end."""
    from bench.config.suite import load_suite
    from mic_bench_plugins.fusions import late as late_mod
    from bench.trial.run import run_trial

    seen = []
    original = late_mod.LateFusion.fit_on_dev

    def spy(self, outputs, labels, *args, **kwargs):
        seen.append(len(labels))
        return original(self, outputs, labels, *args, **kwargs)

    monkeypatch.setattr(late_mod.LateFusion, "fit_on_dev", spy)
    import yaml, tempfile, pathlib

    path = pathlib.Path(tempfile.mkdtemp()) / "late.yaml"
    path.write_text(yaml.safe_dump({"name": "late", "trial": tiny_trial(fusion="late")}))
    spec = load_suite(path, registry).trials[0]
    row = run_trial(spec, TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert seen == [row["n_dev"]] * (row["n_evaluations"] + 1) and 0.0 <= row["late_alpha"] <= 1.0


def _late(registry, task, **options):
    spec = registry.get("fusion", "late")
    enc = {"text": type("E", (), {"dim": 8})(), "image": type("E", (), {"dim": 8})()}
    return spec.build(options, BuildContext(task=task, encoders=enc))


def _brute_force(text_logits, image_logits, labels, grid):
    """Accuracy and macro-F1 (sklearn, labels present on dev) of every a, by a direct loop."""
    from sklearn.metrics import f1_score

    y = labels.numpy()
    acc, f1 = [], []
    for a in grid:
        p = a * torch.softmax(text_logits, -1) + (1 - a) * torch.softmax(image_logits, -1)
        pred = p.argmax(-1).numpy()
        acc.append(float((pred == y).mean()))
        f1.append(f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro", zero_division=0))
    return acc, f1


def test_late_fusion_accuracy_and_macro_f1_choose_different_alphas(registry, task):
    """Dev: ten items of a head label, one each of two tail labels. Text is right on the head
    and calls the tail items head; image is right on the tail but calls three head items tail.
    Accuracy prefers the text model, macro-F1 the image model."""
    from bench.api.interfaces import FusionOutput

    labels = torch.tensor([0] * 10 + [1, 2])
    text_pred = torch.tensor([0] * 10 + [0, 0])
    image_pred = torch.tensor([1, 1, 1] + [0] * 7 + [1, 2])
    lt = torch.nn.functional.one_hot(text_pred, 5).float() * 5
    li = torch.nn.functional.one_hot(image_pred, 5).float() * 5
    out = FusionOutput(torch.zeros(12, 2), head_logits={"text": lt, "image": li})
    chosen = {}
    for metric in ("accuracy", "macro_f1"):
        late = _late(registry, task, alpha_grid_step=0.1)
        late.fit_on_dev(out, labels, metric=metric)
        chosen[metric] = late.report()["late_alpha"]
        assert late.report()["late_alpha_metric"] == metric and late.report()["late_alpha_note"] is None
    grid = [round(0.1 * k, 1) for k in range(11)]
    acc, f1 = _brute_force(lt, li, labels, grid)
    assert acc[grid.index(chosen["accuracy"])] == max(acc)
    assert f1[grid.index(chosen["macro_f1"])] == pytest.approx(max(f1))
    assert chosen["accuracy"] > 0.5 > chosen["macro_f1"]
    # every a ties within each side: the tie goes to the better end (text by accuracy, image by macro-F1)
    assert chosen == {"accuracy": 1.0, "macro_f1": 0.0}
    late = _late(registry, task)
    late.fit_on_dev(out, labels)  # the default metric is macro-F1
    assert late.report()["late_alpha"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_late_fusion_alpha_is_never_worse_than_either_model_on_dev(registry, task, seed):
    from bench.api.interfaces import FusionOutput

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (40,), generator=g)
    lt = torch.randn(40, 5, generator=g) * 2 + torch.nn.functional.one_hot(labels, 5) * 1.5
    li = torch.randn(40, 5, generator=g) * 2 + torch.nn.functional.one_hot(labels, 5) * 1.0
    late = _late(registry, task)
    late.fit_on_dev(FusionOutput(torch.zeros(40, 2), head_logits={"text": lt, "image": li}), labels)
    alpha = late.report()["late_alpha"]
    grid = [0.0, alpha, 1.0]
    _, f1 = _brute_force(lt, li, labels, grid)
    assert f1[1] >= max(f1[0], f1[2]) - 1e-12
    _, every = _brute_force(lt, li, labels, [round(0.05 * k, 2) for k in range(21)])
    assert f1[1] == pytest.approx(max(every))


def test_late_fusion_without_dev_reports_no_alpha(registry, task):
    from bench.errors import BenchError
    from bench.api.interfaces import FusionOutput

    late = _late(registry, task)
    row = late.report()
    assert row["late_alpha"] is None and row["late_alpha_metric"] is None
    assert "not fitted" in row["late_alpha_note"] and "0.5" in row["late_alpha_note"]
    with pytest.raises(BenchError, match="top5"):
        late.fit_on_dev(FusionOutput(torch.zeros(1, 2), head_logits={"text": torch.zeros(1, 5), "image": torch.zeros(1, 5)}), torch.tensor([0]),
                        metric="top5_accuracy")


def test_late_fusion_trial_without_dev_split_writes_null_alpha(registry, tmp_path):
    from bench.config.suite import load_suite
    from bench.trial.run import run_trial
    import yaml

    trial = tiny_trial(fusion="late", splits={"fractions": {"train": 0.8, "test": 0.2}})
    path = tmp_path / "late.yaml"
    path.write_text(yaml.safe_dump({"name": "late", "trial": trial}))
    row = run_trial(load_suite(path, registry).trials[0], TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["n_dev"] == 0 and row["late_alpha"] is None and "no dev split" in row["late_alpha_note"]


def test_late_fusion_returns_dev_outputs_equal_to_a_new_forward(registry, task):
    """The trial uses fit_on_dev's returned outputs instead of predicting dev again: they must be
    what the fitted fusion's forward gives."""
    from bench.api.interfaces import EncoderOutput

    g = torch.Generator().manual_seed(0)
    late = _late(registry, task)
    feats = {m: EncoderOutput(torch.zeros(30, 1, 8), torch.ones(30, 1, dtype=torch.bool), torch.randn(30, 8, generator=g))
             for m in ("text", "image")}
    late.eval()
    with torch.no_grad():
        before = late(feats)
        refit = late.fit_on_dev(before, torch.randint(0, 5, (30,), generator=g))
        after = late(feats)
    assert torch.allclose(refit.logits, after.logits, atol=1e-6)
    assert torch.equal(refit.embedding, after.embedding)

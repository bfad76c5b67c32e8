"""SimCSE and ConVIRT: each loss against a direct loop over the batch, on real tiny encoders."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.trial.records import Collate, to_records
from bench.errors import BenchError
from bench.api.interfaces import BuildContext, TaskInfo
from bench.trial.model import BenchModel
from mic_bench_plugins.objectives.contrastive_ssl import convirt_loss, simcse_loss
from conftest import TINY_DATA, TINY_IMAGE, TINY_TEXT


def loop_info_nce(queries, keys, tau, i):
    """-log( exp(cos(q_i, k_i)/tau) / sum_j exp(cos(q_i, k_j)/tau) ), one item at a time."""
    num = math.exp(float(F.cosine_similarity(queries[i], keys[i], dim=0)) / tau)
    den = sum(math.exp(float(F.cosine_similarity(queries[i], keys[j], dim=0)) / tau) for j in range(len(keys)))
    return -math.log(num / den)


def loop_simcse(v1, v2, tau):
    return sum(loop_info_nce(v1, v2, tau, i) for i in range(len(v1))) / len(v1)


def loop_convirt(u, v, tau, alpha):
    return sum(alpha * loop_info_nce(u, v, tau, i) + (1 - alpha) * loop_info_nce(v, u, tau, i)
               for i in range(len(u))) / len(u)


def build(registry, kind, name, options=None, ctx=None):
    spec = registry.get(kind, name)
    return spec.build(options or {}, ctx or BuildContext())


def tiny_model(registry, image_options=None, text_options=None):
    task = TaskInfo("classification", [f"l{i}" for i in range(4)], has_groups=False)
    ctx = BuildContext(task=task)
    ctx.encoders["text"] = build(registry, "encoder", "hf_text", {**TINY_TEXT["options"], **(text_options or {})}, ctx)
    ctx.encoders["image"] = build(registry, "encoder", "timm_image", {**TINY_IMAGE["options"], **(image_options or {})}, ctx)
    fusion = build(registry, "fusion", "text_only", {}, ctx)
    return BenchModel(dict(ctx.encoders), fusion), ctx


@pytest.fixture(scope="module")
def batch(registry):
    """Eight real catalogue items (titles and image files), preprocessed by the tiny encoders."""
    catalog = build(registry, "dataset", "synthetic_catalog", TINY_DATA["options"])
    items = catalog.items.unique("group", keep="first", maintain_order=True).head(8)
    model, _ = tiny_model(registry)
    records = to_records(items, {}, {})
    return Collate({"text": model.encoders["text"].preprocess, "image": model.encoders["image"].preprocess})(records)


def test_simcse_loss_matches_direct_loop():
    torch.manual_seed(0)
    v1, v2 = torch.randn(6, 10), torch.randn(6, 10)
    assert float(simcse_loss(v1, v2, 0.05)) == pytest.approx(loop_simcse(v1, v2, 0.05), rel=1e-5)
    assert float(simcse_loss(v1, v2, 0.5)) == pytest.approx(loop_simcse(v1, v2, 0.5), rel=1e-5)


def test_convirt_loss_matches_direct_loop_and_weights_directions():
    torch.manual_seed(1)
    u, v = torch.randn(5, 7), torch.randn(5, 7)
    for alpha in (0.75, 0.0, 1.0):
        assert float(convirt_loss(u, v, 0.1, alpha)) == pytest.approx(loop_convirt(u, v, 0.1, alpha), rel=1e-5)
    # the two directions differ, so alpha matters
    assert float(convirt_loss(u, v, 0.1, 1.0)) != pytest.approx(float(convirt_loss(u, v, 0.1, 0.0)), rel=1e-3)


def test_losses_fall_when_the_two_views_agree():
    torch.manual_seed(2)
    z, other = torch.randn(8, 16), torch.randn(8, 16)
    assert float(simcse_loss(z, z, 0.05)) < 0.1 < math.log(8) < float(simcse_loss(z, other, 0.05))
    assert float(convirt_loss(z, z, 0.1, 0.75)) < 0.1 < math.log(8) < float(convirt_loss(z, other, 0.1, 0.75))


def test_simcse_objective_contrasts_two_dropout_views(registry, batch):
    model, _ = tiny_model(registry)
    objective = build(registry, "objective", "simcse")
    model.train()
    torch.manual_seed(3)
    out = objective.loss(model, batch)
    torch.manual_seed(3)
    v1 = model.encoders["text"](batch.inputs["text"]).pooled.detach()
    v2 = model.encoders["text"](batch.inputs["text"]).pooled.detach()
    assert not torch.allclose(v1, v2)  # dropout drew different masks
    assert float(out.total.detach()) == pytest.approx(loop_simcse(v1, v2, 0.05), rel=1e-4)
    assert out.parts["simcse"] == pytest.approx(float(out.total.detach()))
    out.total.backward()
    grads = [p.grad for p in model.encoders["text"].parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_simcse_with_dropout_off_sees_identical_views(registry, batch):
    model, _ = tiny_model(registry)
    objective = build(registry, "objective", "simcse", {"pooling": "mean", "temperature": 0.1})
    model.eval()
    with torch.no_grad():
        loss = float(objective.loss(model, batch).total)
        z = model.encoders["text"](batch.inputs["text"])
        mask = z.mask.unsqueeze(-1).float()
        mean = (z.sequence * mask).sum(1) / mask.sum(1)
    assert loss == pytest.approx(loop_simcse(mean, mean, 0.1), rel=1e-4)
    torch.manual_seed(4)
    assert loss < float(simcse_loss(mean, torch.randn_like(mean), 0.1))


def test_convirt_objective_matches_loop_and_trains_both_sides(registry, batch):
    model, ctx = tiny_model(registry)
    objective = build(registry, "objective", "convirt", {"projection_dim": 32}, ctx)
    model.eval()
    objective.eval()
    out = objective.loss(model, batch)
    with torch.no_grad():
        t, v = model.encoders["text"](batch.inputs["text"]), model.encoders["image"](batch.inputs["image"])
        tm = t.mask.unsqueeze(-1).float()
        u = objective.text_projection((t.sequence * tm).sum(1) / tm.sum(1))
        w = objective.image_projection(v.sequence.mean(1))
    assert float(out.total.detach()) == pytest.approx(loop_convirt(u, w, 0.1, 0.75), rel=1e-4)
    out.total.backward()
    for module in (model.encoders["text"], model.encoders["image"], objective.text_projection, objective.image_projection):
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_convirt_with_frozen_image_encoder_trains_text_and_projections_only(registry, batch):
    model, ctx = tiny_model(registry, image_options={"freeze": "all"})
    objective = build(registry, "objective", "convirt", {"projection_dim": 16}, ctx)
    model.train()
    objective.loss(model, batch).total.backward()
    assert all(p.grad is None for p in model.encoders["image"].parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.encoders["text"].parameters())
    assert any(p.grad is not None for p in objective.image_projection.parameters())


# A random-init BERT's [CLS] vector is nearly the same for every title (cosine ~1.0), so SimCSE, which
# only compares text with text, starts from a collapsed embedding; mean pooling is not collapsed.
@pytest.mark.parametrize("name,options,text_options", [("simcse", {}, {"pooling": "mean"}),
                                                       ("convirt", {"projection_dim": 32}, {})])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(registry, batch, name, options, text_options):
    torch.manual_seed(5)
    model, ctx = tiny_model(registry, text_options=text_options)
    objective = build(registry, "objective", name, options, ctx)
    model.train()
    opt = torch.optim.AdamW([*model.encoders.parameters(), *objective.parameters()], lr=1e-3)
    losses = []
    for _ in range(12):
        loss = objective.loss(model, batch).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_needs_and_defaults(registry):
    simcse, convirt = registry.get("objective", "simcse"), registry.get("objective", "convirt")
    assert simcse.parse_options({}).temperature == 0.05
    opts = convirt.parse_options({})
    assert (opts.temperature, opts.alpha, opts.projection_dim) == (0.1, 0.75, 768)
    model, ctx = tiny_model(registry)
    assert "text" in simcse.build({}, ctx).needs
    assert {"text", "image"} <= convirt.factory(opts, ctx).needs
    with pytest.raises(BenchError, match="alpha"):
        convirt.parse_options({"alpha": 1.5})


def test_convirt_without_an_image_encoder_names_the_field(registry):
    model, ctx = tiny_model(registry)
    del ctx.encoders["image"]
    with pytest.raises(BenchError) as err:
        build(registry, "objective", "convirt", {}, ctx)
    assert err.value.field == "trial.encoders.image" and "add encoders.image" in err.value.fix


def test_simcse_refuses_a_frozen_text_encoder(registry, batch):
    task = TaskInfo("classification", ["a", "b"], has_groups=False)
    ctx = BuildContext(task=task)
    ctx.encoders["text"] = build(registry, "encoder", "hf_text", {**TINY_TEXT["options"], "freeze": "all"}, ctx)
    model = BenchModel(dict(ctx.encoders), build(registry, "fusion", "text_only", {}, ctx))
    with pytest.raises(BenchError) as err:
        build(registry, "objective", "simcse").loss(model, batch)
    assert err.value.field == "trial.encoders.text.options.freeze"

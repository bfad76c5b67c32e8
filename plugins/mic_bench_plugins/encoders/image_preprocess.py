"""The one image preprocessing the image encoders share: timm's evaluation transform.

Resize the shorter side to ``floor(size / crop_pct)`` with the model's interpolation, centre
crop ``size`` x ``size``, scale to [0, 1] and normalise: the pixels a timm model was trained
to see, without squashing the aspect ratio. The transform itself is timm's
(``transforms_imagenet_eval``); this module adds the decoding (bench.data.images) and JPEG draft
mode: libjpeg shrinks a big photo by DCT scaling while both sides stay at least twice the
resize target, and the bicubic resize does the rest, so the pixels stay close to the full
decode (on a noisy 1600 x 1100 photo: mean 0.35 levels of 255, at most 8; DCT scaling right
down to the resize target differs by up to ~35 levels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bench.data.images import load_image

VERSION = "timm-eval-1"  # bump when the pixels change for the same settings (part of the cache key)
DRAFT_FACTOR = 2  # JPEG draft decoding keeps both sides >= DRAFT_FACTOR x the resize target


@dataclass(frozen=True)
class ImagePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    crop_mode: str = "center"
    missing_images: str = "blank"
    _transform: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def for_timm_model(cls, model: torch.nn.Module, img_size: int | None = None, **kw: Any) -> "ImagePreprocess":
        """The settings of ``timm.data.resolve_data_config`` for the model; ``img_size`` overrides its size."""
        import timm

        cfg = timm.data.resolve_data_config({}, model=model)
        return cls(size=int(img_size or cfg["input_size"][-1]), mean=tuple(float(v) for v in cfg["mean"]),
                   std=tuple(float(v) for v in cfg["std"]), crop_pct=float(cfg.get("crop_pct") or 0.875),
                   interpolation=str(cfg.get("interpolation") or "bicubic"),
                   crop_mode=str(cfg.get("crop_mode") or "center"), **kw)

    @property
    def scale_size(self) -> int:
        """The resize target of the shorter side (timm: floor(size / crop_pct))."""
        return math.floor(self.size / self.crop_pct)

    @property
    def transform(self):
        if not self._transform:  # built once per process (workers rebuild it after unpickling)
            from timm.data.transforms_factory import transforms_imagenet_eval

            self._transform.append(transforms_imagenet_eval(
                img_size=self.size, crop_pct=self.crop_pct, crop_mode=self.crop_mode,
                interpolation=self.interpolation, mean=self.mean, std=self.std))
        return self._transform[0]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_transform"] = []
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def pixels(self, records: list[dict[str, Any]], field: str = "image") -> Tensor:
        """[B, 3, size, size] float pixels for the records' images (the placeholder for none)."""
        transform = self.transform
        images = [load_image(r.get("image"), policy=self.missing_images, item_id=r.get("item_id", "?"),
                             draft_size=DRAFT_FACTOR * self.scale_size, field=field) for r in records]
        return torch.stack([transform(img) for img in images]).contiguous()

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the pixels (the cache key's ``preprocess`` part)."""
        return {"version": VERSION, "size": self.size, "crop_pct": self.crop_pct, "crop_mode": self.crop_mode,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std),
                "draft": f"sides >= {DRAFT_FACTOR} x resize target", "missing_images": self.missing_images}

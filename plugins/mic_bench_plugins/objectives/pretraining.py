"""Vision-language pretraining objectives, listed together:

- ``itm``: image-text matching (image_text_matching.py).
- ``mlm``: masked language modelling with whole-word masking (masked_language_model.py).
- VT-BERT ("How to Attend to Different Modalities Equally"), single-stream: ``vtm`` (= itm),
  ``mrfr``, ``gmlm``, ``gmrfr`` (vt_bert.py). The paper's weights when combined in one stage:
  vtm 1, mlm 0.1, gmlm 0.1, mrfr 0.01, gmrfr 0.01 (set per objective in the suite's stage).
"""
from __future__ import annotations

from bench.api.registry import PluginSpec

from . import vt_bert
from .image_text_matching import ITMOptions, build_itm
from .masked_language_model import MaskingOptions, build_mlm

SPECS = [
    PluginSpec("objective", "itm", "image-text matching: half the titles swapped, binary match head on the "
               "multimodal vector", build_itm, ITMOptions),
    PluginSpec("objective", "mlm", "masked language modelling, whole-word masking (15% of words; 80/10/10)",
               build_mlm, MaskingOptions),
    *vt_bert.SPECS,
]

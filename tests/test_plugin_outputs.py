"""Plugin outputs are checked before figures are computed from them: a NaN or infinite embedding, or
logits wider than the task's labels, fail the trial with a message naming the plugin and the tensor
(bench/trial/output_checks.py), never an ok row a leaderboard ranks."""
from __future__ import annotations

import pytest
import torch

from bench.errors import TrialFailure
from bench.api.interfaces import EncoderOutput, FusionOutput
from bench.trial.output_checks import check_encoder_output, check_fusion_output, check_pair_scores
from conftest import TINY_DATA, tiny_trial

TEXT_ONLY = {"text": {"name": "hf_text", "options": {"model": "random", "max_length": 16}}}


def _spoil_embedding(out: FusionOutput, value: float) -> FusionOutput:
    emb = out.embedding.clone()
    emb[0, 0] = value
    return FusionOutput(emb, out.logits, out.head_logits, out.candidate_logits, out.kinds)


def _widen_logits(out: FusionOutput) -> FusionOutput:
    extra = torch.full_like(out.logits[:, :1], 100.0)  # an extra column that always wins
    wide = torch.cat([out.logits, extra], 1)
    return FusionOutput(out.embedding, wide, [wide], out.kinds)


SPOILERS = {  # (what the spoilt fusion does, when, the words of the failure)
    "nan at evaluation": (lambda out: _spoil_embedding(out, float("nan")), "eval",
                          ["fusion 'spoilt' returned embedding", "NaN"]),
    "inf at evaluation": (lambda out: _spoil_embedding(out, float("inf")), "eval",
                          ["fusion 'spoilt' returned embedding", "infinite"]),
    "a logit column too many": (_widen_logits, "always",
                                ["fusion 'spoilt' returned logits of shape", "9 columns, but the task has 8 labels"]),
}


@pytest.fixture
def spoilt_registry(registry):
    """The registry plus fusion 'spoilt': text_only whose output is spoilt as the test says."""
    from mic_bench_plugins.fusions.heads import num_labels
    from mic_bench_plugins.fusions.unimodal import UnimodalFusion

    from bench.api.registry import PluginSpec, Registry

    state = {}

    class Spoilt(UnimodalFusion):
        def forward(self, features):
            out = super().forward(features)
            spoil, when, _ = SPOILERS[state["case"]]
            return spoil(out) if when == "always" or not self.training else out

    def build(opts, ctx):
        return Spoilt("text", ctx.encoders["text"].dim, num_labels(ctx), opts)

    base = registry.get("fusion", "text_only")
    reg = Registry()
    for spec in registry.all():
        reg.add(spec)
    reg.add(PluginSpec("fusion", "spoilt", "text_only, spoilt", build, base.options))
    return reg, state


@pytest.mark.parametrize("case", list(SPOILERS))
def test_a_spoilt_fusion_output_fails_the_trial_naming_plugin_and_tensor(spoilt_registry, case):
    from bench.config.matrix import trial_key
    from bench.config.schema import TrialSpec
    from bench.trial.context import TrialContext
    from bench.trial.run import run_trial

    reg, state = spoilt_registry
    state["case"] = case
    config = tiny_trial(encoders=TEXT_ONLY, fusion="spoilt", dataset=TINY_DATA)
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=reg)).row
    assert row["status"] == "failed", row
    for word in SPOILERS[case][2]:
        assert word in row["error"], row["error"]
    assert "accuracy" not in row and "ndcg@10" not in row


def test_output_checks_name_the_tensor_and_what_is_wrong():
    good = FusionOutput(torch.zeros(4, 3), torch.zeros(4, 5), head_logits={"text": torch.zeros(4, 5)},
                        kinds={"text": torch.zeros(4, 3)})
    check_fusion_output(good, fusion="f", items=4, num_labels=5)
    check_fusion_output(FusionOutput(torch.zeros(4, 3)), fusion="f", items=4, num_labels=0)
    bad = {
        "rows": (FusionOutput(torch.zeros(3, 3)), "embedding of shape [3, 3] for a batch of 4 items"),
        "1-D": (FusionOutput(torch.zeros(4)), "embedding of shape [4] for a batch of 4 items"),
        "narrow": (FusionOutput(torch.zeros(4, 3), torch.zeros(4, 4)), "4 columns, but the task has 5 labels"),
        "part": (FusionOutput(torch.zeros(4, 3), torch.zeros(4, 5), {"text": torch.zeros(4, 6)}), "head_logits['text']"),
        "kind": (FusionOutput(torch.zeros(4, 3), kinds={"image": torch.full((4, 3), float("-inf"))}),
                 "kinds['image'] with 12 infinite value(s)"),
        "not a tensor": (FusionOutput([[0.0]] * 4), "embedding as list, not a tensor"),
        "parts as a list": (FusionOutput(torch.zeros(4, 3), torch.zeros(4, 5), [torch.zeros(4, 5)]),
                            "head_logits as list, not a dict of named tensors"),
    }
    for name, (out, words) in bad.items():
        with pytest.raises(TrialFailure, match=None) as err:
            check_fusion_output(out, fusion="f", items=4, num_labels=5)
        assert words in str(err.value) and "fusion 'f'" in str(err.value), (name, str(err.value))
    encoded = EncoderOutput(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.full((2, 4), float("nan")))
    with pytest.raises(TrialFailure, match=r"encoder 'e' returned pooled with 8 NaN value\(s\)"):
        check_encoder_output(encoded, encoder="e", items=2)
    with pytest.raises(TrialFailure, match=r"objective 'o' returned pair scores of shape \[3, 1\]"):
        check_pair_scores(torch.zeros(3, 1), plugin="objective 'o'", pairs=3)

"""Built-in fusion plugins."""
from bench import hookimpl
from bench.registry import PluginSpec

from . import cross_modal_gated_attention, late, linear_probe, shallow, unimodal
from . import single_stream_head
from .heads import HeadOptions


@hookimpl
def bench_fusions():
    return [
        PluginSpec("fusion", "text_only", "text encoder + classification head (unimodal baseline)",
                   unimodal.build_text_only, HeadOptions),
        PluginSpec("fusion", "image_only", "image encoder + classification head (unimodal baseline)",
                   unimodal.build_image_only, HeadOptions),
        PluginSpec("fusion", "late", "text and image classifiers; p = a p_text + (1-a) p_image, a chosen on dev",
                   late.build_late, late.LateOptions),
        PluginSpec("fusion", "late_avg_embedding", "average of projected text and image embeddings, one softmax head",
                   late.build_late_avg, late.LateAvgOptions),
        PluginSpec("fusion", "shallow", "early fusion: concatenated pooled vectors [h0; v0] -> MLP head",
                   shallow.build, shallow.ShallowOptions),
        PluginSpec("fusion", "cross_modal_gated_attention",
                   "text tokens attend to image tokens; gated by the global image vector",
                   cross_modal_gated_attention.build, cross_modal_gated_attention.CrossModalOptions),
        single_stream_head.SPEC,
        PluginSpec("fusion", "linear_probe",
                   "logistic regression (sklearn) on concatenated frozen pooled vectors, fitted on train; C on dev",
                   linear_probe.build, linear_probe.LinearProbeOptions),
    ]

"""Built-in fusion plugins; each module lists its plugins in SPECS."""
from bench import hookimpl

from . import cross_modal_gated_attention, hybrid_score, late, linear_probe, shallow, single_stream_head, unimodal


@hookimpl
def bench_fusions():
    return [*unimodal.SPECS, *late.SPECS, *shallow.SPECS, *cross_modal_gated_attention.SPECS,
            *single_stream_head.SPECS, *linear_probe.SPECS, *hybrid_score.SPECS]

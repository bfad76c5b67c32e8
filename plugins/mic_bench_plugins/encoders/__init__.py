"""Built-in encoder plugins; each module lists its plugins in SPECS."""
from bench import hookimpl

from . import hf_text, hybrid_text, single_stream, tfidf_text, timm_image


@hookimpl
def bench_encoders():
    return [*hf_text.SPECS, *timm_image.SPECS, *single_stream.SPECS, *tfidf_text.SPECS, *hybrid_text.SPECS]

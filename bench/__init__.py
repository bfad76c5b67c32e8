"""mic-bench: which encoder, fusion and objective wins on a product catalogue, at what cost."""
from importlib import metadata as _metadata

import pluggy

hookimpl = pluggy.HookimplMarker("mic_bench")

try:
    __version__ = _metadata.version("mic-bench")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from bench.api import moved as _moved  # noqa: E402  (old module paths of plugins written before the grouping)

_moved.install()

__all__ = ["hookimpl", "__version__"]

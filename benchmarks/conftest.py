"""Micro-benchmarks run by hand (`python -m pytest benchmarks/ --benchmark-only`), never in CI:
an isolated cache and offline model loading, as in the test suite."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MIC_BENCH_CACHE", os.path.join(tempfile.gettempdir(), f"mic-bench-benchmarks-{os.getuid()}"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

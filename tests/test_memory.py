"""Per-trial peak memory is measured while the trial runs, not over the process lifetime."""
from __future__ import annotations

import numpy as np
import psutil
import pytest

from bench.trial import memory
from bench.trial.memory import PeakMemory


def _big_then_small():
    with PeakMemory() as big:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched, freed before the block ends
        block.sum()
        del block
    with PeakMemory() as small:
        np.ones(1024).sum()
    return big, small


def test_peak_sees_a_short_allocation_and_later_blocks_start_fresh():
    big, small = _big_then_small()
    assert big.peak_mb - small.peak_mb > 100  # the second block does not inherit the first one's peak
    assert small.peak_mb > 10


def test_kernel_high_water_mark_is_used_where_linux_allows():
    if not memory._reset_kernel_peak():
        pytest.skip("this kernel does not allow resetting VmHWM")
    with PeakMemory() as peak:
        pass
    assert peak._kernel and peak._thread is None


def test_sampler_fallback_still_measures(monkeypatch):
    monkeypatch.setattr(memory, "_reset_kernel_peak", lambda: False)
    before_mb = psutil.Process().memory_info().rss / 2**20
    with PeakMemory(interval_s=0.005) as peak:
        block = np.ones(100 * 2**20 // 8)
        for _ in range(20):  # numpy ops release the GIL between calls: the sampler gets turns
            block += 1
        del block
    assert peak._thread is not None
    assert peak.peak_mb - before_mb > 50

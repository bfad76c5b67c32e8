"""Per-trial peak memory is measured while the trial runs, not over the process lifetime."""
from __future__ import annotations

import numpy as np

from bench.memory import PeakMemory


def test_peak_sees_a_short_allocation_and_later_blocks_start_fresh():
    with PeakMemory() as big:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block.sum()
        del block
    with PeakMemory() as small:
        np.ones(1024).sum()
    assert big.peak_mb - small.peak_mb > 100  # the second block does not inherit the first one's peak
    assert small.peak_mb > 10

"""Peak resident memory of one trial, also when a worker process runs several trials in turn."""
from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """Samples this process's RSS in a background thread while the block runs.

    ``ru_maxrss`` would report the whole process lifetime, which is wrong once Ray reuses a
    worker for the next trial; sampling (every 50 ms) bounds the peak from below by at most
    what a spike shorter than the interval adds.
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self._sample()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

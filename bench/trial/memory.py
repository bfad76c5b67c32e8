"""Peak resident memory of one trial, also when a worker process runs several trials in turn."""
from __future__ import annotations

import threading
from pathlib import Path

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_kernel_peak() -> bool:
    """Reset Linux's per-process high-water mark (VmHWM); False where the kernel does not allow it.

    ``ru_maxrss`` and VmHWM cover the whole process lifetime, which is wrong once Ray reuses a
    worker for the next trial; writing 5 to clear_refs (Linux >= 4.0) starts the mark afresh.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _kernel_peak_bytes() is not None


def _kernel_peak_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """Peak RSS of this process while the block runs.

    On Linux the kernel's high-water mark is reset on entry and read on exit: exact, and it
    sees allocations made while Python holds the GIL. Elsewhere a background thread samples
    RSS every ``interval_s``, which can miss a spike shorter than the interval or one made
    while the sampler cannot take the GIL. One trial per process at a time (as Ray runs them).
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._kernel = False
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self._kernel = _reset_kernel_peak()
        self._sample()
        if not self._kernel:
            self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._sample()
        if self._kernel:
            self.peak_bytes = max(self.peak_bytes, _kernel_peak_bytes() or 0)

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

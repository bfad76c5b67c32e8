"""What a trial gets from the runner: the plugin registry, its resources, the cache and the driver's data facts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from bench.api.registry import Registry


@dataclass
class TrialContext:
    registry: Registry
    cpus: float = 1.0
    gpus: float = 0.0
    cache_dir: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    # Called with every dev evaluation's metrics (Ray Tune's report inside a worker: trackers draw
    # learning curves from it, schedulers stop weak trials; a stop ends the trial from inside).
    report: Callable[[dict[str, Any]], None] | None = None
    # What the driver loaded per dataset section: {"options": absolute paths, "fingerprint": ...}
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)

"""One plugin manager: loads the ``mic_bench`` entry-point group and builds the registry.

Built-ins (distribution ``mic-bench``) load through the same group as outside packages.
``MIC_BENCH_PLUGINS`` (comma-separated distribution names) restricts which outside
distributions load; a distribution that fails to import is reported by name and the
others still load.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pluggy

from bench.api import hookspecs
from bench.reporting.provenance import package_version
from bench.api.registry import Registry

ENTRY_POINT_GROUP = "mic_bench"
BUILTIN_DISTRIBUTION = "mic-bench"
ALLOW_ENV = "MIC_BENCH_PLUGINS"
_HOOK_KIND = {
    "bench_datasets": "dataset",
    "bench_encoders": "encoder",
    "bench_fusions": "fusion",
    "bench_objectives": "objective",
    "bench_tasks": "task",
}
log = logging.getLogger(__name__)


def _allowed_distributions() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV, "").strip()
    if not raw:
        return None
    return {name.strip().lower().replace("_", "-") for name in raw.split(",") if name.strip()}


def _normalise(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-")


def make_plugin_manager(left_out: list[str] | None = None
                        ) -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]], dict[str, str]]:
    """Load every allowed entry point; return (manager, plugin name -> (dist, version), errors).

    Distributions MIC_BENCH_PLUGINS leaves out are appended to ``left_out`` when it is given."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed_distributions()
    origins: dict[str, tuple[str, str]] = {}
    errors: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if allowed is not None and _normalise(dist) != BUILTIN_DISTRIBUTION and _normalise(dist) not in allowed:
            if left_out is not None and dist not in left_out:
                left_out.append(dist)
            continue
        plugin_name = f"{dist}:{ep.name}"
        if pm.has_plugin(plugin_name):
            continue  # the same distribution seen twice on sys.path
        try:
            module = ep.load()
        except Exception as exc:  # a broken outside plugin must not take the others down
            errors[plugin_name] = f"{type(exc).__name__}: {exc}"
            continue
        pm.register(module, name=plugin_name)
        origins[plugin_name] = (dist, version)
    return pm, origins, errors


_warned: set[str] = set()  # load errors already logged by this process: each is printed once per command


def warn_load_errors(registry: Registry) -> None:
    """Log each load error once per command: once per process (the registry and the lifecycle hooks
    load plugins apart), and not from Ray workers (the driver has said it, and run.json records it)."""
    if _in_ray_worker():
        return
    for where, error in registry.load_errors.items():
        if where not in _warned:
            _warned.add(where)
            log.warning("plugin %s failed to load (its plugins are unavailable): %s", where, error)


def _in_ray_worker() -> bool:
    import sys

    ray = sys.modules.get("ray")
    try:
        return ray is not None and ray.is_initialized() and \
            ray._private.worker.global_worker.mode == ray.WORKER_MODE
    except AttributeError:  # another Ray layout: warn rather than stay silent
        return False


def build_registry() -> Registry:
    """Collect every plugin spec, tagged with the distribution that offered it."""
    left_out: list[str] = []
    pm, origins, errors = make_plugin_manager(left_out)
    registry = Registry(load_errors=dict(errors), left_out=sorted(left_out))
    for hook_name, kind in _HOOK_KIND.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            dist, version = origins.get(impl.plugin_name, ("?", "?"))
            try:
                specs = impl.function() or []
            except Exception as exc:
                registry.load_errors[impl.plugin_name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
                continue
            for spec in specs:
                if spec.kind != kind:
                    registry.load_errors[impl.plugin_name] = (
                        f"{hook_name} returned plugin '{spec.name}' of kind '{spec.kind}'")
                    continue
                if kind == "task" and not _declare_task_metrics(spec, impl.plugin_name, registry):
                    continue
                registry.add(registry.with_distribution(spec, dist, version))
                registry.distributions[dist] = version
    registry.distributions.setdefault(BUILTIN_DISTRIBUTION, package_version(BUILTIN_DISTRIBUTION))
    warn_load_errors(registry)
    return registry


def _declare_task_metrics(spec, plugin_name: str, registry: Registry) -> bool:
    """A task's own metrics join the metric registry when the task loads (False: refused, recorded)."""
    from bench.metrics import registry as metric_registry

    try:
        metric_registry.declare(getattr(spec.factory, "metrics", ()), origin=f"task '{spec.name}'")
    except (TypeError, ValueError) as exc:
        registry.load_errors[plugin_name] = f"task '{spec.name}': {exc}"
        return False
    return True


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry (the only global state besides the plugin manager)."""
    return build_registry()


def lifecycle_hooks(run_dir: str | os.PathLike | None = None) -> "GuardedHooks":
    """Caller of bench_trial_finished / bench_suite_finished: a hook that raises is logged and, given
    ``run_dir``, recorded under ``hook_errors`` in its run.json; it never ends the suite."""
    return GuardedHooks(_lifecycle_manager(), run_dir)


class GuardedHooks:
    """Calls every implementation of a hook on its own, so one reporter's bug cannot stop the others."""

    def __init__(self, pm: pluggy.PluginManager, run_dir: str | os.PathLike | None = None):
        self._pm = pm
        self._run_dir = run_dir

    def __getattr__(self, hook_name: str):
        caller = getattr(self._pm.hook, hook_name)

        def call(**kwargs):
            results = []
            for impl in reversed(caller.get_hookimpls()):  # pluggy's order: last registered first
                try:
                    results.append(impl.function(*[kwargs[name] for name in impl.argnames]))
                except Exception as exc:  # a plugin bug: logged, recorded, and the suite goes on
                    self._record(hook_name, impl.plugin_name, exc)
            return results

        return call

    def _record(self, hook_name: str, plugin: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s raised in %s (%s); the suite goes on", plugin, hook_name, error)
        if self._run_dir is None:
            return
        from datetime import datetime, timezone

        from bench.reporting.results import RunDir

        try:
            run = RunDir(Path(self._run_dir))
            meta = run.read_meta()
            meta.setdefault("hook_errors", []).append({"hook": hook_name, "plugin": plugin, "error": error[:2000],
                                                       "at": datetime.now(timezone.utc).isoformat()})
            run.write_meta(meta)
        except (OSError, ValueError) as write_error:
            log.error("could not record the hook error in %s: %s", self._run_dir, write_error)


@lru_cache(maxsize=1)
def _lifecycle_manager() -> pluggy.PluginManager:
    return make_plugin_manager()[0]

"""What a run needs to be right on a multi-node Ray cluster, checked by the driver before trials.

- Dataset options that name files are made absolute against the driver's working directory, so a
  worker on another node never reads a different file through its own working directory; each
  worker recomputes the catalogue's content fingerprint and fails the trial when it differs from
  the driver's ("this node sees different data").
- Every alive node must import the plugins the suite uses at the driver's versions; a tiny Ray
  task pinned to each node reports what it has.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError

NODE_CHECK_TIMEOUT_S = 60.0


def is_uri(value: str) -> bool:
    return "://" in value


def absolute_paths(options: Any, cwd: Path) -> Any:
    """Option values that are relative paths of files or folders existing under ``cwd`` become
    absolute; URIs, absolute paths and other values are left as they are."""
    if isinstance(options, dict):
        return {k: absolute_paths(v, cwd) for k, v in options.items()}
    if isinstance(options, list):
        return [absolute_paths(v, cwd) for v in options]
    if isinstance(options, str) and options and not is_uri(options) and not Path(options).is_absolute() \
            and "\n" not in options and len(options) < 4096:
        candidate = cwd / options
        try:
            if candidate.exists():
                return str(candidate.resolve())
        except OSError:  # a value that is not a usable path (too long a name ...) stays as written
            return options
    return options


def dataset_key(ref: dict) -> str:
    """Identity of a trial's dataset section (name and options as written in the suite)."""
    return json.dumps(ref, sort_keys=True, default=str)


def check_fingerprint(expected: str | None, catalog, options: dict) -> None:
    """Fail the trial when this node's catalogue differs from the one the driver loaded."""
    if expected and catalog.fingerprint != expected:
        paths = sorted({v for v in _strings(options) if Path(v).is_absolute() or is_uri(v)})
        raise BenchError(f"this node sees different data at {', '.join(paths) or 'the dataset path'} than the "
                         f"driver (content fingerprint {catalog.fingerprint}, driver {expected})",
                         field="trial.dataset.options",
                         fix="give every node the same files (shared storage, or the same copy at the same path)")


def _strings(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def plugins_used(trials, registry) -> dict[str, str]:
    """Distribution -> version of every plugin the trials name, plus mic-bench itself."""
    from bench.reporting.provenance import package_version

    used: dict[str, str] = {"mic-bench": package_version("mic-bench")}
    for trial in trials:
        cfg = trial.config
        task = cfg.get("task", "classification")
        refs = [("dataset", cfg["dataset"]["name"]), ("fusion", cfg["fusion"]["name"]),
                ("task", task["name"] if isinstance(task, dict) else task)]
        refs += [("encoder", ref["name"]) for ref in cfg["encoders"].values()]
        refs += [("objective", obj["name"]) for stage in cfg["stages"] for obj in stage["objectives"]]
        for kind, name in refs:
            spec = registry.get(kind, name)
            if spec.distribution not in ("?", None):
                used[spec.distribution] = spec.version
    return used


def _node_versions(distributions: list[str]) -> dict[str, str]:
    """Runs on one node: each distribution's version, or the error importing its entry points."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
            continue
        for ep in metadata.distribution(dist).entry_points:
            if ep.group == "mic_bench":
                try:
                    ep.load()
                except Exception as exc:  # reported to the driver with the node's own error text
                    found[dist] = f"{found[dist]} (import of {ep.value} failed: {type(exc).__name__}: {exc})"
    return found


def check_nodes(wanted: dict[str, str], timeout: float = NODE_CHECK_TIMEOUT_S) -> list[dict[str, Any]]:
    """Ask every alive node for the versions of ``wanted``; raise a BenchError naming node,
    distribution and versions on any mismatch. Returns what each node reported."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_node_versions)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(sorted(wanted)) for n in nodes}
    try:
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout)))
    except ray.exceptions.GetTimeoutError:
        raise BenchError(f"a cluster node did not answer the plugin check within {timeout:.0f} s",
                         field="--address", fix="check that every node is healthy (`ray status`)") from None
    report = []
    for node in nodes:
        got = answers[node["NodeID"]]
        where = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:12]})"
        for dist, version in wanted.items():
            if got.get(dist) != version:
                raise BenchError(f"{where} has {dist} {got.get(dist)}; the driver has {version}",
                                 field="--address",
                                 fix=f"install {dist}=={version} on every node, or ship it with Ray's runtime_env "
                                     "(docs/cluster.md)")
        report.append({"node_id": node["NodeID"], "address": node.get("NodeManagerAddress"), "versions": got})
    return report

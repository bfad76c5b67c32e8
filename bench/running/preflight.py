"""Load each distinct dataset of a suite once before any trial starts.

A dataset path that does not exist, a column that is not in the file or a file in the wrong
encoding would otherwise surface only inside the trials, as one failed row per trial after
Ray has started. Checked here, the run stops at once with the file, the field and the fix.
"""
from __future__ import annotations

import logging

from bench.errors import BenchError
from bench.config.schema import LoadedSuite
log = logging.getLogger(__name__)


def preflight(loaded: LoadedSuite, registry, cache_dir: str | None = None) -> dict[str, dict]:
    """Raise the first dataset problem of the suite as a BenchError naming the suite and the option.

    Returns, per distinct dataset section (bench.running.cluster.dataset_key), what the trials must read:
    the options with relative paths made absolute against this working directory, and the
    catalogue's content fingerprint, which every worker checks its own catalogue against.
    """
    from pathlib import Path

    from bench.running.cluster import absolute_paths, dataset_key
    from bench.api.interfaces import BuildContext

    seen: dict[str, frozenset[str] | None] = {}
    manifest: dict[str, dict] = {}
    for trial in loaded.trials:
        ref = trial.config["dataset"]
        key = dataset_key(ref)
        if key not in seen:
            resolved = {**ref, "options": absolute_paths(ref.get("options") or {}, Path.cwd())}
            catalog = _load(resolved, registry, str(loaded.path), BuildContext(cache_dir=cache_dir))
            seen[key] = getattr(catalog, "tasks", None)
            if catalog is not None:
                manifest[key] = {"name": ref["name"], "options": resolved["options"],
                                 "fingerprint": catalog.fingerprint}
        tasks = seen[key]
        task = trial.config.get("task", "classification")
        task = task["name"] if isinstance(task, dict) else task
        needs = getattr(registry.get("task", task).factory, "needs", task)
        if tasks is not None and needs not in tasks:
            raise BenchError(f"dataset '{ref['name']}' does not support task '{task}' (it supports: "
                             f"{', '.join(sorted(tasks)) or 'none'}; trial {trial.label()})",
                             file=str(loaded.path), field="trial.task",
                             fix="classification needs a label column with 2+ labels; matching needs a group column")
    return manifest


def _load(ref: dict, registry, suite_file: str, ctx):
    """The loaded catalogue; None when a plugin bug is left to the trials."""
    name = ref["name"]
    try:
        catalog = registry.create("dataset", name, ref.get("options"), ctx, file=suite_file, field="trial.dataset")
    except BenchError as exc:
        if exc.file == suite_file:  # an unknown plugin or option: already names the suite's field
            raise
        if exc.file is None:  # an option's value is wrong: point into the suite
            field = f"trial.dataset.options.{exc.field}" if exc.field else "trial.dataset"
            raise BenchError(exc.message, file=suite_file, field=field, fix=exc.fix) from None
        raise BenchError(f"{exc.message} (dataset '{name}' of {suite_file})", file=exc.file, field=exc.field,
                         fix=exc.fix) from None
    except Exception as exc:  # a plugin bug is not the user's input: each trial records it with its traceback
        log.warning("dataset '%s' failed to load before the run (%s: %s); the trials will record it",
                    name, type(exc).__name__, exc)
        return None
    return catalog


# ---- where the run writes, and the Ray cluster it runs on ------------------------------------------

def check_writable_folder(path, option: str) -> None:
    """--out / --run-dir can be created and written, checked before anything trains."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BenchError(f"{blocker} is a file, so {path} cannot be a folder", file=path, field=option,
                         fix=f"pass a folder path for {option}")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"cannot write there: {exc.strerror or exc}", file=path, field=option,
                         fix=f"pass a folder you can write to for {option}") from None
    finally:  # leave no trace: the run makes its folders once nothing else can fail first
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break


AUTH_FIX = ("give this machine the cluster's token: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=... (or "
            "RAY_AUTH_TOKEN_PATH=file); `ray get-auth-token` on the head node prints it")


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Something answers at --address, and it lets us in, within seconds (Ray itself retries for minutes)."""
    import socket

    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise BenchError(f"'{address}' is not HOST:PORT, ray://HOST:PORT or auto", field="--address",
                         fix="write e.g. --address 10.0.0.5:6379, --address ray://10.0.0.5:10001 or --address auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BenchError(f"nobody answers at {target} ({exc.strerror or type(exc).__name__}, "
                         f"waited up to {timeout_s:g} s)", field="--address",
                         fix="start the cluster (`ray start --head`) or check the host and port") from None
    if "://" not in address:
        _probe_gcs(target, timeout_s=max(3 * timeout_s, 15.0))


def _probe_gcs(target: str, timeout_s: float) -> None:
    """Ask the cluster's GCS for its id: an auth error comes back in a second, not after 20 s of retries."""
    import threading

    outcome: dict = {}

    def probe():
        try:
            from ray._raylet import GcsClient

            outcome["id"] = GcsClient(address=target).cluster_id
        except Exception as exc:  # Ray's error types differ between versions
            outcome["error"] = exc

    thread = threading.Thread(target=probe, daemon=True, name="ray-address-probe")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise BenchError(f"something answers at {target} but it is not a Ray cluster (no reply in {timeout_s:g} s)",
                         field="--address", fix="pass the head node's GCS port (6379 by default)")
    error = outcome.get("error")
    if error is not None:
        text = f"{type(error).__name__}: {error}"
        if "Auth" in text or "Unauthenticated" in text:
            raise BenchError(f"the Ray cluster at {target} wants an auth token that this machine does not have",
                             field="--address", fix=AUTH_FIX)
        raise BenchError(f"the Ray cluster at {target} did not answer ({text.splitlines()[0][:200]})",
                         field="--address", fix="check that the cluster is up: `ray status` on its head node")


def check_local_cpus(loaded: LoadedSuite) -> None:
    """Before a local Ray starts (it gets every CPU of this machine): can one trial fit at all?"""
    import os

    check_cluster_resources(loaded, {"CPU": float(os.cpu_count() or 1), "GPU": float("inf")}, where="this machine")


def check_cluster_resources(loaded: LoadedSuite, cluster: dict, where: str = "the Ray cluster") -> None:
    """A trial that asks for more CPUs or GPUs than the whole cluster has would wait forever in Tune."""
    res = loaded.suite.resources
    for name, wanted in (("CPU", res.cpu), ("GPU", res.gpu)):
        have = float(cluster.get(name, 0.0))
        if wanted > have + 1e-9:
            fix = (f"set resources.{name.lower()} to at most {have:g}" if have else
                   "set resources.gpu: 0 (this cluster has no GPU), or join a cluster with one via --address")
            raise BenchError(f"each trial needs {wanted:g} {name}{'' if wanted == 1 else 's'} but {where} has "
                             f"{have:g} in all; "
                             "Tune would wait forever", file=str(loaded.path), field=f"resources.{name.lower()}",
                             fix=fix)

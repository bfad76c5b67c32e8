"""Ray processes a killed `bench` driver leaves behind, found and ended by the next `bench` run.

A local Ray instance shares the driver's fate only in part: after a kill -9 of the driver, the
GCS and raylet go, but Ray's agents and the trial workers (each in its own process group) keep
running and holding memory. Each driver records its session (its own pid, the raylet's pid and
the Ray processes alive at start) in Ray's session folder; the next driver ends the processes
of every recorded session whose driver is gone. Only processes of those sessions are touched.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import psutil

log = logging.getLogger(__name__)
RECORD = "mic-bench-driver.json"


def ray_temp_root() -> Path:
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def record_session() -> Path | None:
    """Write this driver's session record into the running local Ray session's folder."""
    try:
        import ray

        session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
        me = psutil.Process()
        children = me.children(recursive=True)
        raylet = next((p.pid for p in children if _name(p) == "raylet"), None)
        record = {"driver_pid": me.pid, "driver_started": me.create_time(), "raylet_pid": raylet,
                  "session_dir": str(session_dir),
                  "pids": {str(p.pid): _started(p) for p in children}}
        path = session_dir / RECORD
        path.write_text(json.dumps(record), encoding="utf-8")
        return path
    except Exception as exc:  # bookkeeping only: a run must not fail over it
        log.debug("could not record the Ray session: %s", exc)
        return None


def orphans(record: dict) -> list[psutil.Process]:
    """Live processes of a recorded session whose driver is gone (empty while the driver lives)."""
    if _alive(record["driver_pid"], record["driver_started"]):
        return []
    pids = {int(pid): started for pid, started in record.get("pids", {}).items()}
    session = record["session_dir"]
    raylet = record.get("raylet_pid")
    # the workers and agents name their raylet in their environment; trusted only while no process
    # has taken that pid over (a new session's raylet would have other workers)
    by_raylet = raylet is not None and not psutil.pid_exists(raylet)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if proc.pid == os.getpid():
                continue
            if proc.pid in pids and abs(proc.info["create_time"] - pids[proc.pid]) < 1e-3:
                found.append(proc)
            elif any(session in part for part in proc.info["cmdline"] or []):
                found.append(proc)
            elif by_raylet and proc.info["create_time"] >= record["driver_started"] and \
                    proc.environ().get("RAY_RAYLET_PID") == str(raylet):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def reap_orphans(root: Path | None = None, timeout_s: float = 5.0) -> int:
    """End the leftover processes of every recorded session whose driver died; returns how many."""
    try:
        root = root or ray_temp_root()
        records = list(root.glob(f"session_*/{RECORD}")) if root.is_dir() else []
    except Exception:
        return 0
    ended = 0
    for path in records:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if _alive(record["driver_pid"], record["driver_started"]):
                continue
            procs = orphans(record)
            for proc in procs:
                proc.terminate()
            _, still = psutil.wait_procs(procs, timeout=timeout_s)
            for proc in still:
                proc.kill()
            if procs:
                log.warning("ended %d Ray processes left by a killed bench run (%s)", len(procs),
                            record["session_dir"])
            ended += len(procs)
            path.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, psutil.Error) as exc:
            log.debug("could not reap %s: %s", path, exc)
    return ended


def _alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1e-3
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _started(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return 0.0

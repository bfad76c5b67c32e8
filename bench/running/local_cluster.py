"""A real multi-node Ray cluster on this machine (`ray start --head` plus `ray start --address`),
for the cluster test and the cluster benchmark. Each node starts from its own working directory
with its own temp dir; stopping kills exactly the processes these nodes started, nothing else.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line names ``marker`` (the nodes' temp dirs), with their children."""
    found: set[psutil.Process] = set()
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(marker in part for part in (proc.info["cmdline"] or [])):
                found.add(proc)
                found.update(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return list(found)


@contextmanager
def local_cluster(workdir: Path, nodes: int = 2, cpus_per_node: int = 1):
    """Yield (address, env) of a cluster of ``nodes`` Ray nodes; ``env`` carries its auth token."""
    port = free_port()
    marker = f"mbnode{port}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    try:
        for i in range(nodes):
            cwd = Path(workdir) / f"node{i}_cwd"
            cwd.mkdir(parents=True, exist_ok=True)
            role = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address=127.0.0.1:{port}"]
            temp = f"/tmp/{marker}_{i}"  # short: Ray's socket paths must fit in 107 bytes
            proc = subprocess.run([RAY, "start", *role, f"--num-cpus={cpus_per_node}", f"--temp-dir={temp}",
                                   "--disable-usage-stats"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
            if proc.returncode != 0:
                raise RuntimeError(f"ray start failed for node {i}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        yield f"127.0.0.1:{port}", env
    finally:
        for proc in node_processes(marker):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(node_processes(marker), timeout=10)

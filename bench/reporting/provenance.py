"""What produced a row: package versions, plugin distributions, git commit, host."""
from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("mic-bench", "torch", "transformers", "timm", "ray", "polars")


def package_version(name: str) -> str:
    """Installed version of a distribution, "?" when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


@lru_cache(maxsize=1)
def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def git_commit(where: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip()[:12] + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return ""


def provenance(distributions: dict[str, str], suite_hash: str, suite_dir: Path) -> dict[str, str]:
    """Columns every row of a run carries."""
    out = {f"v_{name.replace('-', '_')}": package_version(name) for name in PACKAGES}
    out["plugins"] = json.dumps(dict(sorted(distributions.items())))
    out["suite_hash"] = suite_hash
    out["git_commit"] = git_commit(suite_dir)
    out["host_cpu"] = host_cpu()
    out["host_gpu"] = host_gpu()
    out["python"] = platform.python_version()
    return out

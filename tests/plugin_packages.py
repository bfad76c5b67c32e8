"""Install small plugin packages for real (pip), into a throwaway folder put on the path.

Nothing is installed into the environment the tests run in: ``pip install --target`` writes the
packages and their ``*.dist-info`` (with the entry points) into a temporary folder, which goes on
``sys.path`` for this process and on ``PYTHONPATH`` for the `bench` subprocesses and their Ray
workers. ``importlib.metadata`` finds the entry points there exactly as it would in site-packages.
The sources are copied first so that building them leaves no build/ or egg-info in the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mic-bench-film": ROOT / "examples" / "mic-bench-film",
            "mic-bench-hierarchy": ROOT / "examples" / "mic-bench-hierarchy",
            "mic-bench-faulty": ROOT / "tests" / "fixtures" / "faulty_plugin"}


def pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


class InstalledPackages:
    """The packages installed into ``target``; ``activate`` / ``deactivate`` put it on and off the path."""

    def __init__(self, target: Path):
        self.target = target
        self._saved_pythonpath: str | None = None

    def activate(self) -> None:
        sys.path.insert(0, str(self.target))
        self._saved_pythonpath = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (self._saved_pythonpath, str(self.target)) if p)
        self._forget_registries()

    def deactivate(self) -> None:
        if str(self.target) in sys.path:
            sys.path.remove(str(self.target))
        if self._saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = self._saved_pythonpath
        for name in [m for m in sys.modules if m.split(".")[0] in ("mic_bench_film", "mic_bench_faulty")]:
            del sys.modules[name]
        self._forget_registries()

    @staticmethod
    def _forget_registries() -> None:
        from bench.api import plugins

        plugins.get_registry.cache_clear()
        plugins._lifecycle_manager.cache_clear()


def install(*names: str, root: Path | None = None) -> InstalledPackages:
    """pip-install the named packages into a new folder under ``root`` (a temporary folder by default)."""
    base = Path(tempfile.mkdtemp(prefix="mic-bench-plugins-", dir=root))
    target = base / "site"
    for name in names:
        source = base / "src" / name
        shutil.copytree(PACKAGES[name], source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        pip("install", "--no-deps", "--no-build-isolation", "--no-compile", "--target", str(target), str(source))
    packages = InstalledPackages(target)
    packages.activate()
    return packages


def uninstall(packages: InstalledPackages) -> None:
    packages.deactivate()
    shutil.rmtree(packages.target.parent, ignore_errors=True)

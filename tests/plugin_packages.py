"""Install small plugin packages into the test environment for real (pip), once per session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mic-bench-film": ROOT / "examples" / "mic-bench-film",
            "mic-bench-faulty": ROOT / "tests" / "fixtures" / "faulty_plugin"}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True, text=True)


def install(*names: str) -> None:
    pip("install", "--no-deps", "--no-build-isolation", *[str(PACKAGES[n]) for n in names])


def uninstall(*names: str) -> None:
    pip("uninstall", "-y", *names)

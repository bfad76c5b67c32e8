"""Plugins written against the module paths before bench/ was grouped still import, and are told
where the module lives now."""
from __future__ import annotations

import json
import subprocess
import sys

from bench.api.moved import MOVED

PROBE = """
import importlib, json, sys, warnings
moved = json.loads(sys.argv[1])
warnings.simplefilter("always")
out = {}
for old, new in moved.items():
    with warnings.catch_warnings(record=True) as seen:
        module = importlib.import_module(old)
    out[old] = [module is importlib.import_module(new),
                any(new in str(w.message) and w.category is DeprecationWarning for w in seen)]
print(json.dumps(out))
"""


def test_every_old_module_path_is_the_new_module_and_warns_once_imported():
    """In a fresh interpreter (the warning comes with the first import of a name in a process)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(MOVED)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {old: [True, True] for old in MOVED}


def test_a_plugin_class_from_the_old_path_is_the_one_the_harness_checks():
    from bench.interfaces import Task as OldTask  # the path plugins used

    from bench.api.interfaces import Task

    assert OldTask is Task

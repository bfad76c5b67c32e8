"""Old import paths of the modules grouped into bench/api/, bench/data/ and bench/storage/ keep
working for plugins written against them (``from bench.interfaces import Encoder``): each old name
is the new module itself, and importing it warns with the new path (DeprecationWarning)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "bench.interfaces": "bench.api.interfaces",
    "bench.hookspecs": "bench.api.hookspecs",
    "bench.registry": "bench.api.registry",
    "bench.plugins": "bench.api.plugins",
    "bench.plugin_options": "bench.api.plugin_options",
    "bench.catalog": "bench.data.catalog",
    "bench.data_checks": "bench.data.checks",
    "bench.file_reads": "bench.data.file_reads",
    "bench.image_files": "bench.data.image_files",
    "bench.images": "bench.data.images",
    "bench.pair_table": "bench.data.pair_table",
    "bench.fitting": "bench.trial.fitting",
    "bench.paths": "bench.storage.paths",
    "bench.cache_folder": "bench.storage.cache_folder",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and hands back the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}: import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """The module was run when its new name was imported."""


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())

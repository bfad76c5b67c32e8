"""The whole plugin API: one hook per plugin kind, plus lifecycle hooks for reporters.

A plugin module implements any of these with ``@bench.hookimpl`` and is listed under the
``mic_bench`` entry-point group of its distribution.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mic_bench")


@hookspec
def bench_datasets():
    """Return a list of PluginSpec(kind="dataset"); the factory returns a Catalog."""


@hookspec
def bench_encoders():
    """Return a list of PluginSpec(kind="encoder"); the factory returns an Encoder module."""


@hookspec
def bench_fusions():
    """Return a list of PluginSpec(kind="fusion"); the factory returns a Fusion module."""


@hookspec
def bench_objectives():
    """Return a list of PluginSpec(kind="objective"); the factory returns an Objective module."""


@hookspec
def bench_tasks():
    """Return a list of PluginSpec(kind="task"); the factory returns a Task."""


@hookspec
def bench_trial_finished(result):
    """Called in the driver with the row (dict) of every trial that ended, ok or failed."""


@hookspec
def bench_suite_finished(run):
    """Called once with the RunSummary when a suite run ends."""

"""Lifecycle hook example: one line per finished trial, one per finished suite."""
import sys

from bench import hookimpl


@hookimpl
def bench_trial_finished(result):
    score = result.get("macro_f1")
    print(f"trial {result['trial_key']} {result['status']}"
          + (f" macro_f1={score:.3f}" if score is not None else ""), file=sys.stderr)


@hookimpl
def bench_suite_finished(run):
    print(f"suite {run.suite}: {run.ok} ok, {run.failed} failed -> {run.run_dir}", file=sys.stderr)

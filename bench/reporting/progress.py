"""Progress of a suite run: one live view on a terminal, plain lines in a log.

The live view (rich, on stderr) shows trials done / running / failed, the current best leaderboard
row, elapsed time and an ETA, and prints a line per finished trial above itself. When stdout is
not a terminal (`bench run ... > log.txt`, CI logs, pipes), plain lines go to stdout as things
happen: one when a trial starts, one per dev evaluation (epoch: loss, dev metric, samples/s) and
one when it ends. With --quiet on a terminal, the plain lines go to stderr.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import polars as pl

from bench.metrics.registry import quality_columns
from bench.reporting.leaderboard import LeaderboardSpec, group_label, leaderboard_table, table_groups

HEADLINE = ("macro_f1", "accuracy", "f1", "pair_f1", "pair_ap")  # then the row's first quality column in registry
# order (ndcg@k at any k)
# the dev metric shown per epoch: the first of these a report has (the usual selection metrics first)
DEV_HEADLINE = tuple(f"dev_{m}" for m in HEADLINE)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class RunState:
    """Counts and timing of one run; ``kept`` trials finished before a resume and are already done."""

    total: int
    kept: int = 0
    done: int = 0
    failed: int = 0
    running: set[str] = field(default_factory=set)
    best: str = ""
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.done = max(self.done, self.kept)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace of the trials finished in this session (None before the first)."""
        ran = self.done - self.kept
        return self.elapsed / ran * (self.total - self.done) if ran else None

    def counts(self) -> str:
        return f"{self.done}/{self.total} done · {len(self.running)} running · {self.failed} failed"

    def timing(self) -> str:
        eta = self.eta()
        return f"elapsed {_duration(self.elapsed)} · eta {'-' if eta is None else '~' + _duration(eta)}"

    def summary(self) -> str:
        return f"{self.counts()} · {self.timing()}"


def trial_line(state: RunState, row: dict, label: str) -> str:
    """The plain line for one finished trial."""
    metric = next((f"{m}={row[m]:.3f}" for m in [*HEADLINE, *quality_columns(row)]
                   if isinstance(row.get(m), (int, float))), "")
    eta = state.eta()
    line = (f"[{state.done}/{state.total}] {row.get('status', '?'):6s} {label} {metric} "
            f"({row.get('wall_s') or 0:.0f}s; elapsed {state.elapsed:.0f}s, "
            f"eta {0 if eta is None else eta:.0f}s, failed {state.failed})")
    if row.get("status") != "ok" and row.get("error"):
        line += f"\n    error: {str(row['error']).splitlines()[0][:300]}"
    return line


def _number(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and value == value else "-"


def start_line(state: RunState, label: str) -> str:
    """The plain line for a trial that started."""
    return f"[{state.done}/{state.total}] start  {label} ({len(state.running)} running; elapsed {state.elapsed:.0f}s)"


def evaluation_line(state: RunState, label: str, point: dict) -> str:
    """The plain line for one dev evaluation of a running trial: (stage,) epoch, mean train loss since
    the previous evaluation, a dev metric, and the training samples/s since the previous evaluation."""
    epoch = point.get("epoch")
    parts = [f"epoch {epoch:g}" if isinstance(epoch, (int, float)) else "epoch ?",
             f"loss {_number(point.get('train_loss'), 4)}"]
    if point.get("stage") and point.get("stage") != "train":
        parts[0] = f"stage {point['stage']} {parts[0]}"
    candidates = [*DEV_HEADLINE, *(f"dev_{m}" for m in quality_columns([k[4:] for k in point if k.startswith("dev_")]))]
    dev = next((m for m in candidates if isinstance(point.get(m), (int, float))), None)
    if dev:
        parts.append(f"{dev} {_number(point[dev])}")
    if isinstance(point.get("train_samples_per_s"), (int, float)):
        parts.append(f"{point['train_samples_per_s']:.1f} samples/s")
    return f"[{state.done}/{state.total}] epoch  {label}: " + " · ".join(parts)


def best_row_text(rows: pl.DataFrame, spec: LeaderboardSpec) -> str:
    """The leaderboard's current first row, e.g. 'fusion=late  macro_f1 0.712 ± 0.010 (2 seeds)'."""
    if rows.is_empty() or "status" not in rows.columns or not (rows["status"] == "ok").any():
        return ""
    table = leaderboard_table(rows, spec).filter(pl.col("n") > 0)
    if table.is_empty():
        return ""
    group_by = table_groups(table, spec)
    top = table.row(0, named=True)
    metric = spec.sort if spec.sort in table.columns else next(
        (m for m in (spec.metrics or quality_columns(table.columns)) if m in table.columns), None)
    text = " ".join(f"{g}={top[g]}" for g in group_by) if len(group_by) > 1 else group_label([top[group_by[0]]])
    if metric and top.get(metric) is not None:
        std = top.get(f"{metric}_std")
        text += f"  {metric} {top[metric]:.3f}" + (f" ± {std:.3f}" if std is not None and std == std else "")
    return text + f"  ({top['n']} seed{'s' if top['n'] != 1 else ''})"


def default_stream() -> TextIO:
    """stdout when it goes to a file or pipe (the log then has the progress in order with the
    final table), else stderr (the live view, or --quiet lines, beside the terminal's output)."""
    stdout = sys.stdout
    try:
        return stdout if stdout is not None and not stdout.isatty() else sys.stderr
    except (AttributeError, ValueError):  # a stream without isatty, or closed
        return sys.stderr


class RunProgress:
    """Feeds a RunState from the runner's callback and shows it (live view or plain lines)."""

    def __init__(self, title: str, total: int, kept: int = 0, *, quiet: bool = False, stream: TextIO | None = None,
                 force_terminal: bool | None = None):
        from rich.console import Console

        self.title = title
        self.state = RunState(total=total, kept=kept)
        self.stream = stream or default_stream()
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True, force_terminal=force_terminal)
        self.live_view = not quiet and self.console.is_terminal
        self._live = None

    def __getstate__(self) -> dict:
        """Tune saves its callbacks with the experiment; the console and live view (locks) stay out."""
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "stream", "_live")}

    def __setstate__(self, state: dict) -> None:
        from rich.console import Console

        self.__dict__.update(state, stream=default_stream(), _live=None)
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)

    def __enter__(self) -> RunProgress:
        if self.live_view:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=2, transient=False,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def _line(self, line: str) -> None:
        if self._live is not None:
            self.console.print(line, markup=False)
        else:
            print(line, file=self.stream, flush=True)

    def trial_started(self, key: str, label: str = "") -> None:
        self.state.running.add(key)
        if self._live is None:  # the live view counts running trials itself
            self._line(start_line(self.state, label or key))

    def trial_evaluated(self, key: str, label: str, point: dict) -> None:
        """One dev evaluation (epoch) of a running trial, as it reached the driver through Ray Tune."""
        if self._live is None:
            self._line(evaluation_line(self.state, label or key, point))

    def trial_finished(self, key: str, row: dict, label: str, best: str = "") -> None:
        state = self.state
        state.running.discard(key)
        state.done += 1
        state.failed += row.get("status") == "failed"
        state.best = best or state.best
        self._line(trial_line(state, row, label))

    def __rich__(self):
        """Rebuilt at every refresh, so elapsed time and ETA tick between trial ends."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        state = self.state
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(state.total, 1), completed=state.done, width=24), state.counts())
        grid.add_row(self.title, bar)
        grid.add_row("", state.timing())
        grid.add_row("best", state.best or "-")
        return grid

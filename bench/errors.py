"""User-facing errors: every one names where the problem is and how to fix it."""
from __future__ import annotations


class BenchError(Exception):
    """An error caused by the user's input (suite, data, options, arguments).

    The CLI prints it without a traceback and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class TrialFailure(Exception):
    """A trial could not finish (NaN loss, timeout, ...); recorded as a failed row."""


class TrialTimeout(TrialFailure):
    """The trial ran past the suite's max_trial_minutes."""

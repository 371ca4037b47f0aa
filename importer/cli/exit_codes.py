"""What every ``importer`` command's exit code means, decided in one place.

README "Exit codes" is this module in words: 0 nothing needs a look, 3 the command finished
with rows (or commands) that need a look, 1 fatal, 2 usage; 130/143 interrupted, 141 a
closed pipe.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "Counted",
    "exit_code",
]


class Counted(Protocol):
    """The counts the rule reads: a run's summary, or a sync's outcome."""

    @property
    def rejected(self) -> int: ...

    @property
    def existing(self) -> int: ...

    @property
    def failed(self) -> int: ...


EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE, what a tool killed by a closed pipe reports
EXIT_PIPE = 141


def exit_code(summary: Counted) -> int:
    """0 when nothing needs a look, 3 when some rows do (the one place this is decided).

    Rows that exist already (insert mode) are what re-running an import is
    expected to meet, as `--max-rejects` already treats them: a re-run that
    changed nothing is a success, not a partial failure.  Bad data,
    duplicates, strict-mode conflicts and failed writes do need a look.
    """
    needs_look = summary.rejected - summary.existing
    return EXIT_PARTIAL if needs_look or summary.failed else EXIT_OK

"""What every ``importer`` command's exit code means, decided in one place.

README "Exit codes" is this module in words: 0 nothing needs a look, 3 the command finished
with rows (or commands) that need a look, 1 fatal, 2 usage; 130/143 interrupted, 141 a
closed pipe.
"""

from __future__ import annotations

from importer.counts import Counts

__all__ = [
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "exit_code",
]


EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE, what a tool killed by a closed pipe reports
EXIT_PIPE = 141


def exit_code(counts: Counts) -> int:
    """0 when nothing needs a look, 3 when some rows do (`Counts.needs_look`, the one rule:
    a run's summary, a job's total and a sync's outcome are all `Counts`)."""
    return EXIT_PARTIAL if counts.needs_look else EXIT_OK

"""What a person sees: a progress line on a terminal, and the summary of a run.

Workers never print; the driver hands counts to `Progress` on the main thread,
and the summary is printed once from the run's counted `Summary` (its JSON
form), so what is shown is what was counted.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "print_summary"]


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, stream: Any = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, rows: int, bytes_read: int, total: int | None) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = rows / elapsed
        text = f"\r{rows:>12,} rows  {rate:>10,.0f} rows/s"
        if total and bytes_read:
            frac = min(bytes_read / total, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0
            text += f"  {frac:6.1%}  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.stream.write(text + "  ")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _lines(lines: list[int], count: int) -> str:
    if not lines:
        return ""
    shown = ", ".join(str(n) for n in lines)
    more = f" and {count - len(lines):,} more" if count > len(lines) else ""
    return f": line{'' if count == 1 else 's'} {shown}{more}"


def print_summary(data: dict[str, Any], *, writing: bool) -> None:
    first = "written" if writing else "would write"
    print(
        f"rows {data['rows']:,}  {first} {data['written' if writing else 'would_write']:,}"
        + (f"  unchanged {data['unchanged']:,}" if data.get("unchanged") else "")
        + f"  rejected {data['rejected']:,}"
        + (f" (of which {data['existing']:,} exist already)" if data.get("existing") else "")
        + (f"  failed {data['failed']:,}" if data.get("failed") or writing else "")
        + (f"  skipped {data['skipped']:,}" if data.get("skipped") else "")
        + f"  batches {data['batches']:,}  {data['seconds']:.2f}s"
        f"  {data['rows_per_second']:,.0f} rows/s"
    )
    if data.get("objects") is not None:
        print(f"manifest objects read: {data['objects_read']:,} of {data['objects']:,}")
    for line in data.get("ttl") or ():
        print(f"commands' {line}")
    if data["ignored_columns"]:
        print(f"ignored columns (not in the spec): {', '.join(data['ignored_columns'])}")
    for key, what in (
        ("padded", 'fewer fields than the header (the missing ones read as "")'),
        ("truncated", "more fields than the header (the extra ones dropped)"),
    ):
        # as Step Functions' ItemReader does: said, with the lines, since such a row
        # may be misaligned (a stray delimiter) and was imported all the same
        if data.get(f"{key}_rows"):
            n = data[f"{key}_rows"]
            print(
                f"{n:,} row{'' if n == 1 else 's'} had {what}, as ItemReader reads them"
                + _lines(data.get(f"{key}_lines") or [], n)
            )
    if data["rejects_file"]:
        print(f"rejected rows: {data['rejects_file']}")
    if data.get("failures_file"):
        print(f"failed rows: {data['failures_file']}")

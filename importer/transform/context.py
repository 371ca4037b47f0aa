"""Run-wide values every record of one import shares.

Timestamps, the request-id prefix and the `source` tag come from here, never
from the clock per row: the same row with the same `RunContext` always gives
byte-identical items, which is what makes an at-least-once child execution
(or a resumed local run) idempotent.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["RunContext", "ContextError", "normalise_timestamp"]

_TS = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|z|[+-]\d{2}:?\d{2})?\Z")


class ContextError(ValueError):
    """BatchInput or run settings are malformed."""


def normalise_timestamp(value: str) -> str:
    """ISO 8601 → `YYYY-MM-DDTHH:MM:SS±HH:MM` (MBC: offset, no milliseconds)."""
    m = _TS.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ContextError(f"timestamp {value!r} is not ISO 8601 (YYYY-MM-DDTHH:MM:SS±HH:MM)")
    tz = m.group(3)
    if tz is None or tz in ("Z", "z"):
        offset = "+00:00"
    else:
        offset = tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    return f"{m.group(1)}T{m.group(2)}{offset}"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What one run stamps on every record.

    `run_id` names the run (the Step Functions execution name, or a local id);
    each record's `requestId` is `{run_id}#{line}`, unique and repeatable.
    """

    run_id: str
    timestamp: str
    source: str
    user: str = "importer"
    ip: str | None = None
    #: the command's `ttl` (epoch seconds), as the framework's publish sets it: the data
    #: table's TTL configuration applied to the run's start, or None (written as null)
    ttl: int | None = None

    @classmethod
    def new(cls, *, run_id: str | None = None, user: str = "importer") -> RunContext:
        rid = run_id or uuid.uuid4().hex[:16]
        now = datetime.now(UTC).replace(microsecond=0).isoformat()
        return cls(run_id=rid, timestamp=now, source=f"import-csv:{rid}", user=user)

    def to_batch_input(self) -> dict[str, Any]:
        # ttl is not BatchInput: each child reads the TTL configuration itself
        return {k: v for k, v in asdict(self).items() if v is not None and k != "ttl"}

    @classmethod
    def from_batch_input(cls, batch_input: dict[str, Any]) -> RunContext:
        """Accept our own BatchInput or the Step Functions one of the ASL.

        The generated import-csv ASL passes `ExecutionName` and `StartTime`
        from the context object, plus the execution input under `Attributes`.
        """
        if not isinstance(batch_input, dict):
            raise ContextError("BatchInput must be a JSON object")
        attrs = batch_input.get("Attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        run_id = batch_input.get("run_id") or batch_input.get("ExecutionName")
        timestamp = batch_input.get("timestamp") or batch_input.get("StartTime")
        if not run_id or not isinstance(run_id, str):
            raise ContextError("BatchInput needs run_id (or ExecutionName from the ASL)")
        if not timestamp:
            raise ContextError("BatchInput needs timestamp (or StartTime from the ASL)")
        user = batch_input.get("user") or attrs.get("user") or "importer"
        ip = batch_input.get("ip") or attrs.get("ip")
        return cls(
            run_id=run_id,
            timestamp=normalise_timestamp(timestamp),
            source=batch_input.get("source") or f"import-csv:{run_id}",
            user=str(user),
            ip=str(ip) if ip else None,
        )

    def epoch(self) -> int:
        """The run's timestamp in epoch seconds (what the TTL counts from)."""
        return int(datetime.fromisoformat(self.timestamp).timestamp())

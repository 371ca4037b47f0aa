"""The Distributed Map child Lambda: one batch in, a small summary out.

Accepted events (checked up front, with a message saying what was expected):

- the Distributed Map batch itself: `{"Items": [...], "BatchInput": {...}}`;
- the MBC envelope the seed's state machines send:
  `{"source": "step-function", "context": <$$>, "input": {"Items": ..., "BatchInput": ...}}`.

Settings come from BatchInput (`Attributes` is the execution input of the
generated ASL: `table`, `spec`, `rejects`, `mode`, `dataTable`) and fall back to
the environment the template sets (`IMPORTER_TABLE`, `IMPORTER_SPEC`,
`IMPORTER_REJECTS`, `IMPORTER_MODE`, `IMPORTER_DATA_TABLE`).  The import mode
(insert by default, upsert, strict, blind) is honoured as in `importer run`.
Items are transformed with the same engine and written with the same writer
as the local driver.  Record timestamps and ids come from
the execution (name, start time) and the batch's content, so an EXPRESS child
run twice writes byte-identical items: the table does not change.

Rejected rows are stored as CSV at `{rejects}/{execution}/{batch}.csv`
(`batch` is a digest of the items, so a re-run overwrites, not duplicates).
A batch in which no row could be written raises `BatchFailed`, which the Map
counts against its tolerated failures.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

from importer.batching import AWS_MAX_INPUT_BYTES, Batch
from importer.context import ContextError, RunContext
from importer.driver import BatchOutcome, process_batch
from importer.engines import get_engine
from importer.spec import Spec, SpecError, load_spec, loads_spec

__all__ = ["BatchFailed", "EventError", "HandlerSettings", "handle_event", "lambda_handler"]

STATE_NAME = "csv_rows_handler"


class EventError(ValueError):
    """The event is not a Distributed Map batch; nothing was written."""


class BatchFailed(RuntimeError):
    """No row of the batch could be written; the summary is attached."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(f"{message}: {json.dumps(summary, sort_keys=True)}")
        self.summary = summary


@dataclass(frozen=True, slots=True)
class HandlerSettings:
    table: str
    spec_uri: str
    rejects_uri: str | None
    region: str
    endpoint_url: str | None = None
    mode: str = "insert"
    data_table: str | None = None


def _unwrap(event: Any) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(event, dict):
        raise EventError(
            'expected {"Items": [...], "BatchInput": {...}} or the MBC envelope '
            '{"source": "step-function", "context": ..., "input": ...}, got '
            f"{type(event).__name__}"
        )
    if "input" in event and "Items" not in event:
        if event.get("source") not in (None, "step-function"):
            raise EventError(f"unexpected event source {event.get('source')!r}")
        state = (event.get("context") or {}).get("State", {}).get("Name")
        if state is not None and state != STATE_NAME:
            raise EventError(f"this handler serves state {STATE_NAME!r}, not {state!r}")
        event = event["input"]
        if not isinstance(event, dict):
            raise EventError("envelope 'input' must be the batch object")
    items = event.get("Items")
    if not isinstance(items, list):
        raise EventError('the batch has no "Items" list (is ItemBatcher configured?)')
    batch_input = event.get("BatchInput") or {}
    if not isinstance(batch_input, dict):
        raise EventError('"BatchInput" must be an object')
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in item.items()
        ):
            raise EventError(
                f"Items[{n - 1}] is not a CSV row object of strings (ItemReader InputType CSV)"
            )
    return items, batch_input


def _settings(batch_input: dict[str, Any]) -> HandlerSettings:
    attrs = batch_input.get("Attributes")
    attrs = attrs if isinstance(attrs, dict) else {}

    def pick(key: str, env: str) -> str | None:
        value = attrs.get(key) or batch_input.get(key) or os.environ.get(env)
        return str(value) if value else None

    table = pick("table", "IMPORTER_TABLE")
    spec_uri = pick("spec", "IMPORTER_SPEC")
    if not table:
        raise EventError("no table: set BatchInput.Attributes.table or IMPORTER_TABLE")
    if not spec_uri:
        raise EventError("no spec: set BatchInput.Attributes.spec or IMPORTER_SPEC")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    mode = pick("mode", "IMPORTER_MODE") or "insert"
    if mode not in ("insert", "upsert", "strict", "blind"):
        raise EventError(f"unknown mode {mode!r} (insert, upsert, strict or blind)")
    return HandlerSettings(
        mode=mode,
        data_table=pick("dataTable", "IMPORTER_DATA_TABLE"),
        table=table,
        spec_uri=spec_uri,
        rejects_uri=pick("rejects", "IMPORTER_REJECTS"),
        region=region,
        endpoint_url=os.environ.get("IMPORTER_DYNAMODB_ENDPOINT") or None,
    )


# Warm-container caches: compiled specs and writers are reused across invocations;
# nothing per-invocation is kept here.
_SPECS: dict[str, Spec] = {}
_WRITERS: dict[tuple[str, str, str | None], Any] = {}


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _load_spec(uri: str, s3: Any) -> Spec:
    if uri in _SPECS:
        return _SPECS[uri]
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        try:
            raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - any failure here is "cannot read spec"
            raise SpecError(f"cannot read spec {uri}: {exc}") from None
        spec = loads_spec(raw, uri)
    else:
        spec = load_spec(uri)
    _SPECS[uri] = spec
    return spec


def _writer(settings: HandlerSettings) -> Any:
    key = (settings.table, settings.region, settings.endpoint_url)
    if key not in _WRITERS:
        from importer.http_writer import HttpBatchWriter

        _WRITERS[key] = HttpBatchWriter(
            table=settings.table,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            workers=4,
        )
    return _WRITERS[key]


def _mode_stage(settings: HandlerSettings, spec: Spec, writer: Any) -> tuple[Any, Any]:
    """One ModeStage per invocation: nothing of one batch's state leaks into the next."""
    if settings.mode == "blind":
        return writer, None
    from importer.lookup import Boto3Transport, HttpTransport, KeyLookup
    from importer.modes import ModeStage, code_column_of

    if hasattr(writer, "_pool"):
        transport: Any = HttpTransport(writer)
    else:
        transport = Boto3Transport.from_args(
            region=settings.region, endpoint_url=settings.endpoint_url, workers=4
        )
    stage = ModeStage.open(
        mode=settings.mode,  # type: ignore[arg-type]
        table=settings.table,
        data_table=settings.data_table,
        lookup=KeyLookup(transport),
        code_column=code_column_of(spec),
    )
    if settings.mode == "strict":
        from importer.strict_writer import StrictWriter

        writer = StrictWriter(transport=transport, table=settings.table)
    return writer, stage


def batch_digest(items: list[dict[str, str]]) -> str:
    """A stable id for a batch: the same Items always give the same id."""
    body = json.dumps(items, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _header(items: list[dict[str, str]]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        for k in item:
            seen.setdefault(k, None)
    return list(seen)


def _store_rejects(
    outcome: BatchOutcome, header: list[str], uri: str, execution: str, batch_id: str, s3: Any
) -> str | None:
    if not outcome.rejects and not outcome.failures:
        return None
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(["item", "column", "value", "reason", *header])
    for r in outcome.rejects:
        out.writerow([r.line, r.column, r.value, r.reason, *r.row])
    for f in outcome.failures:
        out.writerow([f.line, "", f.sk, f"failed: {f.reason}"])
    body = buf.getvalue().encode("utf-8")
    if uri.startswith("s3://"):
        bucket, prefix = _split_s3(uri)
        key = f"{prefix.rstrip('/')}/{execution}/{batch_id}.csv".lstrip("/")
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
        return f"s3://{bucket}/{key}"
    path = os.path.join(uri, execution, f"{batch_id}.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(body)
    return path


def handle_event(
    event: Any,
    *,
    writer: Any = None,
    s3_client: Any = None,
    engine: str = "native",
) -> dict[str, Any]:
    """Process one batch event; `writer`/`s3_client` are injectable for tests."""
    items, batch_input = _unwrap(event)
    size = len(
        json.dumps(
            {"Items": items, "BatchInput": batch_input}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8", "surrogatepass")
    )
    if size > AWS_MAX_INPUT_BYTES:
        raise EventError(
            f"batch input is {size} bytes, over the {AWS_MAX_INPUT_BYTES} bytes Step Functions "
            "allows a child execution; lower MaxItemsPerBatch / MaxInputBytesPerBatch"
        )
    settings = _settings(batch_input)
    try:
        base = RunContext.from_batch_input(batch_input)
    except ContextError as exc:
        raise EventError(str(exc)) from None
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3", region_name=settings.region)
    spec = _load_spec(settings.spec_uri, s3_client)
    batch_id = batch_digest(items)
    # requestId must stay unique across batches without line numbers: prefix the batch id.
    ctx = RunContext(
        run_id=f"{base.run_id}:{batch_id}",
        timestamp=base.timestamp,
        source=base.source,
        user=base.user,
        ip=base.ip,
    )
    header = _header(items)
    missing = [c for c in spec.needed_columns if c not in header]
    if missing and items:
        raise EventError(f"spec column {missing[0]!r} is not among the CSV columns {header}")
    rows = [(n, [item.get(h, "") for h in header]) for n, item in enumerate(items, start=1)]
    writer = writer if writer is not None else _writer(settings)
    writer, stage = _mode_stage(settings, spec, writer)
    outcome = process_batch(
        Batch(index=0, rows=rows),
        engine=get_engine(engine),
        spec=spec,
        header=header,
        ctx=ctx,
        writer=writer,
        stage=stage,
        ticket=stage.ticket() if stage is not None else None,
    )
    rejects_at = None
    if settings.rejects_uri:
        rejects_at = _store_rejects(
            outcome, header, settings.rejects_uri, base.run_id, batch_id, s3_client
        )
    summary = {
        "batch": batch_id,
        "mode": settings.mode,
        "rows": outcome.rows,
        "written": outcome.written,
        "unchanged": outcome.unchanged,
        "rejected": len(outcome.rejects),
        "failed": len(outcome.failures),
        "rejects": rejects_at,
    }
    if outcome.rows and outcome.written == 0 and outcome.unchanged == 0:
        raise BatchFailed("no row of the batch could be written", summary)
    return summary


def lambda_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point (`importer.handler.lambda_handler`)."""
    return handle_event(event)

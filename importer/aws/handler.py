"""The Distributed Map child Lambda: one batch in, a small summary out.

Accepted events (checked up front, with a message saying what was expected):

- the Distributed Map batch itself: `{"Items": [...], "BatchInput": {...}}`, its
  Items CSV rows (objects of strings) or JSON, JSONL and Parquet items (objects of
  typed values, mapped onto the spec as a local run maps them: `importer.input.items`;
  no pyarrow needed -- ItemReader has read the Parquet file already);
- the MBC envelope the seed's state machines send:
  `{"source": "step-function", "context": <$$>, "input": {"Items": ..., "BatchInput": ...}}`.

Settings come from BatchInput (`Attributes` is the execution input of the
generated ASL: `table`, `spec`, `rejects`, `mode`, `dataTable`) and fall back to
the environment the template sets (`IMPORTER_TABLE`, `IMPORTER_SPEC`,
`IMPORTER_REJECTS`, `IMPORTER_MODE`, `IMPORTER_DATA_TABLE`); the endpoint is
the standard `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`.  The batch runs
through the same pipeline (`importer.run.pipeline`) and per-batch unit as
`importer run`, so both count, reject and fail a batch the same way.  Record
timestamps and ids come from the execution (name, start time) and the batch's
content, so an EXPRESS child run twice writes byte-identical items.

Rejected rows are stored as CSV at `{rejects}/{execution}/{batch}.rejects.csv`
and refused rows at `.../{batch}.failures.csv`, in the local run's formats
(`importer.run.reports`; `batch` is a digest of the items, so a re-run
overwrites).  A batch with a failed row raises `BatchFailed`
(`BatchOutcome.failed_batch`), which the Map counts against its tolerated
failures; rejected rows never do.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from importer.dynamodb.region import default_region
from importer.dynamodb.request_pool import Lanes
from importer.input.batching import AWS_MAX_INPUT_BYTES, Batch
from importer.input.items import ItemMapper
from importer.modes.stage import mode_of
from importer.records import Reject
from importer.run.batch_steps import BatchOutcome
from importer.run.pipeline import (
    PipelineSettings,
    WriterKind,
    open_client,
    open_pipeline,
)
from importer.run.reports import failures_csv, rejects_csv
from importer.transform.context import ContextError, RunContext
from importer.transform.engines import DEFAULT_ENGINE
from importer.transform.spec import Spec, SpecError, header_problem, load_spec, loads_spec

__all__ = ["BatchFailed", "EventError", "handle_event", "lambda_handler"]

STATE_NAME = "csv_rows_handler"
#: (run, table, data table) -> tenant -> the commands' TTL: read once per run
_RUN_TTLS: dict[tuple[str, str, str | None], dict[Any, Any]] = {}


class EventError(ValueError):
    """The event is not a Distributed Map batch; nothing was written."""


class BatchFailed(RuntimeError):
    """DynamoDB refused rows of this batch after every retry; the summary is attached."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(f"{message}: {json.dumps(summary, sort_keys=True)}")
        self.summary = summary


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
        if not isinstance(item, dict):
            raise EventError(
                f"Items[{n - 1}] is not an object: ItemReader hands each CSV row, JSON/JSONL "
                "item or Parquet row to the child as a JSON object"
            )
    return items, batch_input


def _all_strings(items: list[Any]) -> bool:
    """True for a CSV batch: every item an object of strings (ItemReader InputType CSV)."""
    return all(all(type(v) is str for v in item.values()) for item in items)


def _epoch_ms_as_iso(items: list[dict[str, Any]], spec: Spec) -> None:
    """A Parquet row's timestamp reaches the child as epoch milliseconds (docs/aws-facts.md,
    ItemReader): in a `datetime` column it is that instant in UTC, as a local run reads it."""
    from datetime import UTC, datetime

    columns = [rule.name for rule in spec.columns if rule.type == "datetime"]
    for item in items:
        for name in columns:
            value = item.get(name)
            if type(value) is int:
                stamp = datetime.fromtimestamp(value / 1000, UTC).isoformat()
                head, dot, rest = stamp.partition(".")
                if dot:
                    stamp = f"{head}.{rest[:3].rstrip('0') or '0'}{rest[6:]}"
                item[name] = stamp


def _typed_rows(
    items: list[dict[str, Any]], spec: Spec
) -> tuple[list[str], list[tuple[int, list[str]]], list[Reject]]:
    """A batch of JSON, JSONL or Parquet items as the spec's rows, misfits as rejects.

    The same mapping as a local run's typed readers (`importer.input.items`): numbers
    kept as written, booleans, nulls, nested values in `json` columns; a value
    whose type does not fit its column is a reject of that item (its position
    in the batch, 1-based, as for CSV items).
    """
    mapper = ItemMapper(spec.needed_columns, spec.kinds)
    rows: list[tuple[int, list[str]]] = []
    rejects: list[Reject] = []
    for n, item in enumerate(items, start=1):
        row = mapper.row(n, item, 0)
        if row.error is None:
            rows.append((n, row.fields))
        else:
            rejects.append(Reject(n, row.column, row.value, row.error, tuple(row.fields)))
    return mapper.header, rows, rejects


def _given(batch_input: dict[str, Any]) -> Callable[[str, str], str | None]:
    """A setting as the child is told it: BatchInput's Attributes (the execution input),
    BatchInput itself, else the environment the template sets."""
    attrs = batch_input.get("Attributes")
    attrs = attrs if isinstance(attrs, dict) else {}

    def pick(key: str, env: str) -> str | None:
        value = attrs.get(key) or batch_input.get(key) or os.environ.get(env)
        return str(value) if value else None

    return pick


def _spec_uri(pick: Callable[[str, str], str | None]) -> str:
    """Where the spec is (the child reads it before its settings can be made)."""
    if not pick("table", "IMPORTER_TABLE"):
        raise EventError("no table: set BatchInput.Attributes.table or IMPORTER_TABLE")
    spec_uri = pick("spec", "IMPORTER_SPEC")
    if not spec_uri:
        raise EventError("no spec: set BatchInput.Attributes.spec or IMPORTER_SPEC")
    return spec_uri


def _settings(
    pick: Callable[[str, str], str | None], spec: Spec, *, writer: WriterKind, engine: str
) -> PipelineSettings:
    """The child's run settings: `importer run`'s own type (`PipelineSettings`), so the
    defaults (the mode, the region) and every check are the ones a local run has; a value
    out of range is an `EventError` in the settings' words, before anything is written."""
    sync = (pick("sync", "IMPORTER_SYNC") or "").lower() in ("1", "true", "yes")
    try:
        settings = PipelineSettings(
            spec=spec,
            table=pick("table", "IMPORTER_TABLE"),
            mode=mode_of(pick("mode", "IMPORTER_MODE")),
            data_table=pick("dataTable", "IMPORTER_DATA_TABLE"),
            update=pick("update", "IMPORTER_UPDATE"),
            master_table=os.environ.get("IMPORTER_MASTER_DATA_TABLE"),
            region=default_region(),
            workers=CHILD_WORKERS,
            batches=1,
            writer=writer,
            engine=engine,
            check_table=False,
            max_wcu=_budget_share(
                pick("maxWcu", "IMPORTER_MAX_WCU"),
                pick("maxConcurrency", "IMPORTER_MAX_CONCURRENCY"),
            ),
            sync=sync,
        )
    except ValueError as exc:  # SettingsError, or mode_of's
        raise EventError(str(exc)) from None
    mode = settings.mode
    if sync and mode in ("upsert", "strict"):
        # concurrent children hold versions of one entity in no particular order
        raise EventError(
            f"sync in the Lambda child needs mode insert or blind, not {mode}: in {mode} mode "
            "two children may hold versions of one entity, and only the command state "
            "machine (or importer sync afterwards) applies them in order"
        )
    return settings


def _budget_share(total: str | None, concurrency: str | None) -> float | None:
    """Each of the Map's MaxConcurrency children gets its share of the run's budget.

    0 (the template's default) or nothing means no budget: the table's own pace.
    """
    try:
        budget, children = float(total or 0), int(concurrency or 1)
    except ValueError:
        budget, children = -1.0, 0
    if budget < 0 or children < 1:
        raise EventError(
            f"maxWcu {total!r} / maxConcurrency {concurrency!r}: expected a number of write "
            "units per second and a positive count of concurrent children"
        )
    return budget / children if budget > 0 else None


# Warm-container cache: a compiled spec is reused across invocations for as long as its
# object is unchanged -- keyed by the S3 object's ETag (a local file: its size and mtime),
# so a spec replaced at the same key is read again by the next invocation, not never.
# Nothing per-invocation is kept here (each invocation opens and closes its pipeline).
_SPECS: dict[str, tuple[object, Spec]] = {}
#: requests one child sends at once (its batch's requests side by side,
#: `importer.dynamodb.request_pool`)
CHILD_WORKERS = 4
#: kept across warm invocations: a new batch starts with what earlier ones measured
#: (a fresh set sends its first requests one at a time until they are timed)
_LANES: Lanes | None = None


def _child_lanes() -> Lanes:
    global _LANES
    if _LANES is None:
        _LANES = Lanes(CHILD_WORKERS, 1)
    return _LANES


#: the S3 client, kept across warm invocations (per region): making one is most of a
#: warm invocation's fixed cost (bench_lambda_child.py); boto3 clients are thread-safe
_S3: dict[str | None, Any] = {}


def _s3_client(region: str | None) -> Any:
    client = _S3.get(region)
    if client is None:
        import boto3

        client = _S3[region] = boto3.client("s3", region_name=region)
    return client


#: the DynamoDB client, kept across warm invocations (per region, endpoint and writer): its
#: connections stay open and its signing key derived (a new TCP connection and key per
#: invocation were most of a warm invocation's fixed cost).  The container's credentials
#: are the function role's, refreshed by the client's own provider.
_DYNAMO: dict[tuple[Any, ...], Any] = {}


def _dynamo_client(settings: PipelineSettings) -> Any:
    key = (settings.region, settings.endpoint_url, settings.writer, settings.workers)
    client = _DYNAMO.get(key)
    if client is None:
        client = _DYNAMO[key] = open_client(settings)
    return client


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _load_spec(uri: str, s3: Any) -> Spec:
    """The compiled spec at `uri`, compiled again only when the object changed.

    On S3 a warm invocation asks for the object only if its ETag moved
    (`IfNoneMatch`): one request either way, and "not modified" carries no body.
    """
    cached = _SPECS.get(uri)
    if not uri.startswith("s3://"):
        try:
            st = os.stat(uri)
        except OSError as exc:
            raise SpecError(f"cannot read spec {uri}: {exc.strerror or exc}") from None
        version: object = (st.st_size, st.st_mtime_ns)
        if cached is not None and cached[0] == version:
            return cached[1]
        spec = load_spec(uri)
        _SPECS[uri] = (version, spec)
        return spec
    bucket, key = _split_s3(uri)
    conditional = {"IfNoneMatch": cached[0]} if cached is not None else {}
    try:
        obj = s3.get_object(Bucket=bucket, Key=key, **conditional)
        raw = obj["Body"].read()
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot read spec"
        if cached is not None and _not_modified(exc):
            return cached[1]
        raise SpecError(f"cannot read spec {uri}: {exc}") from None
    spec = loads_spec(raw, uri)
    etag = obj.get("ETag")
    if etag:
        _SPECS[uri] = (etag, spec)
    return spec


def _not_modified(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    return status == 304 or code in ("304", "NotModified")


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


def _store(uri: str, name: str, body: bytes, s3: Any) -> str:
    if uri.startswith("s3://"):
        bucket, prefix = _split_s3(uri)
        key = f"{prefix.rstrip('/')}/{name}".lstrip("/")
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
        return f"s3://{bucket}/{key}"
    path = os.path.join(uri, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(body)
    return path


def _store_reports(
    outcome: BatchOutcome, header: list[str], uri: str, execution: str, batch_id: str, s3: Any
) -> tuple[str | None, str | None]:
    """The batch's rejects and failures files, in the local run's formats."""
    rejects = failures = None
    if outcome.rejects:
        body = rejects_csv(outcome.rejects, header)
        rejects = _store(uri, f"{execution}/{batch_id}.rejects.csv", body, s3)
    if outcome.failures:
        body = failures_csv(outcome.failures, header)
        failures = _store(uri, f"{execution}/{batch_id}.failures.csv", body, s3)
    return rejects, failures


def handle_event(
    event: Any,
    *,
    client: Any = None,
    s3_client: Any = None,
    engine: str = DEFAULT_ENGINE,
    writer: WriterKind = "http",
) -> dict[str, Any]:
    """Process one batch event; `client` (a `importer.dynamodb.client` client) and `s3_client`
    are injectable for tests (moto's in-process `mock_aws` needs the boto3 client)."""
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
    pick = _given(batch_input)
    spec_uri = _spec_uri(pick)
    try:
        base = RunContext.from_batch_input(batch_input)
    except ContextError as exc:
        raise EventError(str(exc)) from None
    if s3_client is None:
        s3_client = _s3_client(default_region())
    spec = _load_spec(spec_uri, s3_client)
    settings = _settings(pick, spec, writer=writer, engine=engine)
    batch_id = batch_digest(items)
    # requestId must stay unique across batches without line numbers: prefix the batch id.
    ctx = RunContext(
        run_id=f"{base.run_id}:{batch_id}",
        timestamp=base.timestamp,
        source=base.source,
        user=base.user,
        ip=base.ip,
    )
    refused: list[Reject] = []
    if _all_strings(items):
        header = _header(items)
        problem = header_problem(spec, header) if items else None
        if problem:
            raise EventError(problem)
        rows = [(n, [item.get(h, "") for h in header]) for n, item in enumerate(items, start=1)]
    else:
        # JSON, JSONL or Parquet items: a key left out is a null, as in a local run
        if batch_input.get("InputType") == "PARQUET":
            _epoch_ms_as_iso(items, spec)
        header, rows, refused = _typed_rows(items, spec)
    if client is None:
        client = _dynamo_client(settings)
    with open_pipeline(settings, client=client, lanes=_child_lanes()) as pipeline:
        # the TTL configuration is read once per run (and container), not once per batch
        key = (base.run_id, settings.table or "", settings.data_table)
        if key not in _RUN_TTLS:
            _RUN_TTLS.clear()  # a warm container serves one run at a time
        pipeline.share_ttls(_RUN_TTLS.setdefault(key, {}))
        ctx = pipeline.stamp(ctx)
        outcome = pipeline.process(
            Batch(index=0, rows=rows, rejects=refused),
            header=header,
            ctx=ctx,
            ticket=pipeline.ticket(),
        ).final()
    rejects_at = failures_at = None
    rejects_uri = pick("rejects", "IMPORTER_REJECTS")
    if rejects_uri:
        rejects_at, failures_at = _store_reports(
            outcome, header, rejects_uri, base.run_id, batch_id, s3_client
        )
    summary = {
        "batch": batch_id,
        "mode": settings.mode,
        **outcome.counts().counts_json(_SUMMARY_COUNTS),
        "rejects": rejects_at,
        "failures": failures_at,
        "ttl": pipeline.ttl_notes(),
    }
    if outcome.failed_batch:
        raise BatchFailed(f"DynamoDB refused {len(outcome.failures)} row(s) of the batch", summary)
    return summary


#: the counts a child's summary shows (the Map's result), in this order
_SUMMARY_COUNTS = ("rows", "written", "unchanged", "rejected", "existing", "failed")


def lambda_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point (`importer.aws.handler.lambda_handler`)."""
    return handle_event(event)

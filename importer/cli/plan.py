"""`importer plan`: what an import will cost, in one streaming pass, without writing.

The source is read, batched and transformed exactly as `importer run` does it
(same reader, same ItemBatcher, the native transform), and every item is
priced in write units from its exact size (`importer.dynamodb.capacity_units.item_write_units`).
Nothing is kept but counters, so memory stays flat however big the file.

From the totals it derives the time of the import at a write rate -- `--max-wcu`,
or the table's described capacity (DescribeTable: provisioned WCU, or
on-demand) -- and its cost: on-demand write request units, provisioned WCU-hours
for the import's duration, and for a new, empty table the price of DynamoDB's
own ImportTable (per GB of uncompressed source; no transform, no MBC records).
Prices are flags with the published us-east-1 defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from importer.cli.options import add_batch_options, add_reader_options, batch_limits
from importer.dynamodb.capacity_units import item_write_units
from importer.dynamodb.region import default_region
from importer.input.batching import (
    AWS_MAX_INPUT_BYTES,
    DEFAULT_MAX_ITEMS,
    Batch,
    Batcher,
    RowsByLine,
    check_limits,
)
from importer.input.source import SourceError
from importer.run.batch_steps import resolve_duplicates
from importer.run.driver import open_rows
from importer.transform.context import RunContext
from importer.transform.engines import DEFAULT_ENGINE, ENGINES, get_engine
from importer.transform.spec import Spec, check_header, load_spec

__all__ = [
    "ASL_BATCH_ITEMS",
    "NEW_ON_DEMAND_WRU",
    "PRICE_PER_MILLION_WRU",
    "PRICE_PER_WCU_HOUR",
    "IMPORT_TABLE_PRICE_PER_GB",
    "Plan",
    "Capacity",
    "plan_source",
    "describe_capacity",
    "register",
]

#: On-demand write request units, us-east-1, after the November 2024 price cut.
PRICE_PER_MILLION_WRU = 0.625
#: Provisioned write capacity, us-east-1, per WCU-hour.
PRICE_PER_WCU_HOUR = 0.00065
#: ImportTable (import from S3), us-east-1, per GB of uncompressed source data.
IMPORT_TABLE_PRICE_PER_GB = 0.15
#: A new on-demand table's warm throughput for writes (docs/aws-facts.md, Capacity and prices).
NEW_ON_DEMAND_WRU = 4000
#: The command state machine, per command record (counted on the seed's machine):
#: state transitions (Standard workflows) and Lambda invocations, and their prices.
TRANSITIONS_PER_COMMAND = 10
LAMBDA_CALLS_PER_COMMAND = 8
PRICE_PER_MILLION_TRANSITIONS = 25.0
PRICE_PER_MILLION_LAMBDA_REQUESTS = 0.20
#: The generated import-csv ASL's ItemBatcher.MaxItemsPerBatch (one Map child per batch).
ASL_BATCH_ITEMS = 10
#: BatchWriteItem takes at most this many puts per call.
REQUEST_ITEMS = 25


class _Counted:
    """Counts the (decompressed) bytes a reader takes from a stream."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self.inner.readline(limit)
        self.count += len(data)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


@dataclass(slots=True)
class Plan:
    """The counts of one dry run; `rows == items + rejected`."""

    source: str
    rows: int = 0
    items: int = 0
    rejected: int = 0
    batches: int = 0
    batch_items: int | None = DEFAULT_MAX_ITEMS
    map_children: int = 0
    map_batch_items: int = ASL_BATCH_ITEMS
    requests: int = 0
    item_bytes: int = 0
    write_units: int = 0
    source_bytes: int = 0
    source_bytes_read: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def units_per_item(self) -> float:
        return self.write_units / self.items if self.items else 0.0

    def add(self, other: Plan) -> None:
        """Add a file's plan to this one: a job's plan is the sum of its files' (its batch
        limits are the job's own, not summed)."""
        self.rows += other.rows
        self.items += other.items
        self.rejected += other.rejected
        self.batches += other.batches
        self.map_children += other.map_children
        self.requests += other.requests
        self.item_bytes += other.item_bytes
        self.write_units += other.write_units
        self.source_bytes += other.source_bytes
        self.source_bytes_read += other.source_bytes_read
        self.ignored_columns += [c for c in other.ignored_columns if c not in self.ignored_columns]


@dataclass(frozen=True, slots=True)
class Capacity:
    """A write rate to plan with, and where it came from."""

    write_units_per_second: float
    basis: str  # "max-wcu" | "provisioned" | "on-demand" | "on-demand (assumed)"
    billing: str  # "PROVISIONED" | "PAY_PER_REQUEST"
    provisioned_wcu: int | None = None
    item_count: int | None = None


def plan_source(
    source: str,
    spec: Spec,
    *,
    batch_items: int | None = DEFAULT_MAX_ITEMS,
    batch_bytes: int | None = AWS_MAX_INPUT_BYTES,
    engine: str = DEFAULT_ENGINE,
    s3_client: Any = None,
    input_type: str | None = None,
    max_items: int | None = None,
) -> Plan:
    """Read, batch and transform `source` once; count rows, rejects, batches and units.

    Batches are cut as `importer run` cuts them (`batch_items`/`batch_bytes`),
    and, in the same pass, as the generated ASL's ItemBatcher cuts them
    (`ASL_BATCH_ITEMS` rows): the number of Map child executions.
    """
    check_limits(batch_items, batch_bytes)
    eng = get_engine(engine)
    # a run id as long as a real run's (items, and so their units, have its length in them)
    ctx = RunContext.new()
    plan = Plan(source=source, batch_items=batch_items)
    counters: list[_Counted] = []

    def count(raw: Any) -> _Counted:
        counters.append(_Counted(raw))
        return counters[-1]

    _kind, stream, reader = open_rows(
        source, spec, eng, input_type=input_type, s3_client=s3_client, wrap=count
    )
    rows: Any = reader
    limit = max_items or spec.input.max_items
    if limit:
        rows = itertools.islice(reader, limit)
    try:
        header = list(reader.header)
        plan.ignored_columns = check_header(spec, header)
        size_of = eng.row_json_size
        batch_input = ctx.to_batch_input()
        local = Batcher(
            max_items=batch_items, max_bytes=batch_bytes, batch_input=batch_input, header=header
        )
        children = Batcher(
            max_items=ASL_BATCH_ITEMS,
            max_bytes=AWS_MAX_INPUT_BYTES,
            batch_input=batch_input,
            header=header,
        )

        code_column = spec.code_column

        def transform(batch: Batch) -> None:
            plan.batches += 1
            plan.rows += len(batch.rows) + len(batch.rejects)
            plan.rejected += len(batch.rejects)
            if not batch.rows:
                return
            result = eng.transform_batch(spec, header, batch.rows, ctx)
            # a key twice in a batch is written once (the batch unit's rule, as in blind mode)
            items, dupes = resolve_duplicates(
                result.items, code_column=code_column, fields=RowsByLine(batch.rows)
            )
            plan.rejected += len(result.rejects) + len(dupes)
            plan.items += len(items)
            plan.requests += -(-len(items) // REQUEST_ITEMS)
            for item in items:
                plan.item_bytes += len(item.wire)
                plan.write_units += item_write_units(item.wire)

        sized = [0]

        def also_as_children(rows: Any) -> Any:
            """Each readable row also goes to the ASL's batcher (its size measured once)."""
            for row in rows:
                if row.error is None:
                    # a typed reader (JSON, JSONL, Parquet) knows its item's JSON size
                    sized[0] = size = row.size or size_of(header, row.fields)
                    if children.add(row.line, row.fields, size) is not None:
                        plan.map_children += 1
                yield row

        # the run's own row-to-batch loop (`Batcher.cut`), fed the sizes measured above
        for batch in local.cut(also_as_children(rows), header, lambda _h, _f: sized[0]):
            transform(batch)
        if children.flush() is not None:
            plan.map_children += 1
        reader.close()
    finally:
        plan.source_bytes = counters[0].count if counters else 0
        plan.source_bytes_read = stream.bytes_read
        stream.close()
    if plan.rows != plan.items + plan.rejected:  # pragma: no cover - a bug, loudly
        raise AssertionError(f"plan accounting broken: {plan}")
    return plan


def describe_capacity(
    table: str, *, region: str | None = None, endpoint_url: str | None = None
) -> Capacity:
    """The table's write capacity from DescribeTable (provisioned WCU, or on-demand)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    from importer.dynamodb.errors import missing_table_message, unreachable_message

    region = default_region(region)
    where = endpoint_url or "AWS"
    try:
        client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)
        where = client.meta.endpoint_url
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") == "ResourceNotFoundException":
            raise SourceError(missing_table_message(table, where, region)) from None
        raise SourceError(
            f"cannot describe table {table!r} at {where} (region {region}): "
            f"{err.get('Code', 'error')}: {err.get('Message', '')}"
        ) from None
    except EndpointConnectionError as exc:
        raise SourceError(unreachable_message(where, region, str(exc))) from None
    except BotoCoreError as exc:
        raise SourceError(
            f"cannot describe table {table!r} at {where} (region {region}): {exc}"
        ) from None
    billing = (desc.get("BillingModeSummary") or {}).get("BillingMode")
    provisioned = (desc.get("ProvisionedThroughput") or {}).get("WriteCapacityUnits") or 0
    items = desc.get("ItemCount")
    if billing != "PAY_PER_REQUEST" and provisioned > 0:
        return Capacity(float(provisioned), "provisioned", "PROVISIONED", int(provisioned), items)
    warm = (desc.get("WarmThroughput") or {}).get("WriteUnitsPerSecond")
    cap = (desc.get("OnDemandThroughput") or {}).get("MaxWriteRequestUnits")
    rate = float(warm) if warm else float(NEW_ON_DEMAND_WRU)
    basis = "on-demand" if warm else "on-demand (assumed)"
    if cap and cap > 0:
        rate = min(rate, float(cap))
    return Capacity(rate, basis, "PAY_PER_REQUEST", None, items)


def estimate(
    plan: Plan,
    capacity: Capacity | None,
    *,
    price_per_million_wru: float = PRICE_PER_MILLION_WRU,
    price_per_wcu_hour: float = PRICE_PER_WCU_HOUR,
    import_price_per_gb: float = IMPORT_TABLE_PRICE_PER_GB,
    new_table: bool = True,
) -> dict[str, Any]:
    """Time and cost of writing `plan` at `capacity`, as a JSON-ready dict."""
    out: dict[str, Any] = {
        "rows": plan.rows,
        "items": plan.items,
        "rejected": plan.rejected,
        "batches": plan.batches,
        "batch_items": plan.batch_items,
        "map_children": plan.map_children,
        "map_batch_items": plan.map_batch_items,
        "batch_write_requests": plan.requests,
        "item_bytes": plan.item_bytes,
        "write_units": plan.write_units,
        "write_units_per_item": round(plan.units_per_item, 3),
        "source_bytes": plan.source_bytes,
        "ignored_columns": plan.ignored_columns,
        "on_demand": {
            "price_per_million_wru": price_per_million_wru,
            "cost": round(plan.write_units / 1e6 * price_per_million_wru, 4),
        },
    }
    out["data_table"] = _data_table_paths(plan, price_per_million_wru)
    if capacity is not None:
        seconds = plan.write_units / capacity.write_units_per_second
        out["capacity"] = asdict(capacity)
        out["seconds"] = round(seconds, 1)
        hours = max(1, math.ceil(seconds / 3600))
        out["provisioned"] = {
            "price_per_wcu_hour": price_per_wcu_hour,
            "wcu": math.ceil(capacity.write_units_per_second),
            "hours_billed": hours,
            "cost": round(
                math.ceil(capacity.write_units_per_second) * hours * price_per_wcu_hour, 4
            ),
        }
    if new_table:
        gb = plan.source_bytes / 1e9
        out["import_table"] = {
            "price_per_gb": import_price_per_gb,
            "source_gb": round(gb, 6),
            "cost": round(gb * import_price_per_gb, 4),
            "note": "new tables only; loads CSV rows as they are (every non-key column a "
            "string), no validation and no MBC command records",
        }
    return out


def _data_table_paths(plan: Plan, price_per_million_wru: float) -> dict[str, Any]:
    """What it costs to turn the imported commands into data records, by either path.

    The state machine runs once per command (the stream starts it); `run --sync`
    writes each data record and re-writes each command once, in bulk.  Lambda
    duration and the state machine's own status writes are left out: the
    comparison only gets more lopsided with them.
    """
    transitions = plan.items * TRANSITIONS_PER_COMMAND
    calls = plan.items * LAMBDA_CALLS_PER_COMMAND
    bulk_units = 2 * plan.write_units  # the data record, and the command marked finished
    return {
        "state_machine": {
            "executions": plan.items,
            "state_transitions": transitions,
            "lambda_invocations": calls,
            "cost": round(
                transitions / 1e6 * PRICE_PER_MILLION_TRANSITIONS
                + calls / 1e6 * PRICE_PER_MILLION_LAMBDA_REQUESTS
                + bulk_units / 1e6 * price_per_million_wru,
                4,
            ),
        },
        "bulk_sync": {
            "write_units": bulk_units,
            "cost": round(bulk_units / 1e6 * price_per_million_wru, 4),
        },
    }


def _money(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(report: dict[str, Any]) -> str:
    """The human summary of `estimate`'s dict."""
    lines = [
        f"rows            {report['rows']:,}  ({report['items']:,} items, "
        f"{report['rejected']:,} rejected)",
        f"batches         {report['batches']:,} of up to {report['batch_items']} rows; "
        f"{report['batch_write_requests']:,} BatchWriteItem requests",
        f"Map children    {report['map_children']:,} (ItemBatcher {report['map_batch_items']} "
        "rows, as the generated ASL)",
        f"item bytes      {report['item_bytes']:,} (source {report['source_bytes']:,})",
        f"write units     {report['write_units']:,} ({report['write_units_per_item']} per item)",
    ]
    od = report["on_demand"]
    lines.append(
        f"on-demand       {_money(od['cost'])} at ${od['price_per_million_wru']} per million WRU"
    )
    dt = report.get("data_table")
    if dt:
        sm, bulk = dt["state_machine"], dt["bulk_sync"]
        lines.append(
            f"data table      state machine {_money(sm['cost'])} ({sm['executions']:,} "
            f"executions, {sm['state_transitions']:,} transitions, "
            f"{sm['lambda_invocations']:,} Lambda calls); run --sync {_money(bulk['cost'])} "
            f"({bulk['write_units']:,} more write units)"
        )
    if "capacity" in report:
        cap = report["capacity"]
        prov = report["provisioned"]
        lines.append(
            f"time            {_duration(report['seconds'])} at "
            f"{cap['write_units_per_second']:,.0f} WCU/s ({cap['basis']})"
        )
        lines.append(
            f"provisioned     {_money(prov['cost'])} for {prov['wcu']:,} WCU x "
            f"{prov['hours_billed']} h at ${prov['price_per_wcu_hour']} per WCU-hour"
        )
    if report.get("ttl"):
        lines.append(f"command ttl     {report['ttl']}")
    if "import_table" in report:
        it = report["import_table"]
        lines.append(
            f"ImportTable     {_money(it['cost'])} for {it['source_gb']} GB at "
            f"${it['price_per_gb']} per GB ({it['note']})"
        )
    return "\n".join(lines)


def describe_ttl(
    spec: Spec,
    table: str | None,
    *,
    data_table: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    now: float | None = None,
) -> str:
    """Which `ttl` the run's commands would carry (the data table's TTL configuration)."""
    if not table:
        return (
            "not read (no --table): each command carries the data table's TTL "
            "configuration from the master-data table, or null"
        )
    tenant = spec.record.tenant
    if not tenant.is_constant:
        return f"per tenant (record.tenant is {tenant.source!r}): read once per tenant in the run"
    import time

    import boto3

    from importer.mbc.model import command_ttl

    client = boto3.client("dynamodb", region_name=default_region(region), endpoint_url=endpoint_url)
    start = time.time() if now is None else now
    found = command_ttl(client, table, data_table, tenant.source, start)
    return found.describe().removeprefix("ttl: ")


def plan_capacity(args: argparse.Namespace) -> tuple[Capacity | None, bool]:
    """The write rate to plan at (`--max-wcu`, the described table, else a new on-demand
    table's), and whether the table is new (empty, or not described)."""
    capacity: Capacity | None = None
    described: Capacity | None = None
    if args.table:
        described = describe_capacity(
            args.table, region=args.region, endpoint_url=args.endpoint_url
        )
        capacity = described
    if capacity is None and args.max_wcu is None:
        # nothing described, nothing capped: a new on-demand table's warm throughput
        capacity = Capacity(float(NEW_ON_DEMAND_WRU), "new on-demand table", "PAY_PER_REQUEST")
    if args.max_wcu is not None:
        capacity = Capacity(
            float(args.max_wcu),
            "max-wcu",
            described.billing if described else "PAY_PER_REQUEST",
            described.provisioned_wcu if described else None,
            described.item_count if described else None,
        )
    new_table = described is None or not described.item_count
    return capacity, new_table


def plan_file(args: argparse.Namespace, source: str, spec: Spec, s3_client: Any) -> Plan:
    """One file's plan with the command line's reader and batch options (plan and job plan)."""
    batch_items, batch_bytes = batch_limits(args)
    return plan_source(
        source,
        spec,
        batch_items=batch_items,
        batch_bytes=batch_bytes,
        engine=args.engine or DEFAULT_ENGINE,
        s3_client=s3_client,
        input_type=args.input_type,
        max_items=args.max_items,
    )


def plan_report(args: argparse.Namespace, plan: Plan, spec: Spec) -> dict[str, Any]:
    """`plan` (one file's, or a job's sum) priced with the command line's capacity and
    prices, and the TTL its commands would carry: what `plan` and the job's plan print."""
    capacity, new_table = plan_capacity(args)
    report = estimate(
        plan,
        capacity,
        price_per_million_wru=args.price_per_million_wru,
        price_per_wcu_hour=args.price_per_wcu_hour,
        import_price_per_gb=args.import_price_per_gb,
        new_table=new_table,
    )
    report["ttl"] = describe_ttl(
        spec,
        args.table,
        data_table=args.data_table,
        region=args.region,
        endpoint_url=args.endpoint_url,
    )
    return report


def _cmd_plan(args: argparse.Namespace) -> int:
    args.source = args.sources[0]
    spec = load_spec(args.spec)
    s3_client = None
    if args.source.startswith("s3://"):
        import boto3

        s3_client = boto3.client("s3", region_name=default_region(args.region))
    report = plan_report(args, plan_file(args, args.source, spec, s3_client), spec)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a price >= 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    """Add ``importer plan`` to the CLI."""
    p = subparsers.add_parser(
        "plan", help="dry run: rows, batches, write units, time and cost of an import"
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="CSV, JSON, JSONL, Parquet or manifest: a local path or s3://bucket/key; several, "
        "a glob, a folder, an s3:// prefix or a .zip: the job `importer run` would import",
    )
    p.add_argument("--spec", required=True, help="import spec (TOML, or JSON), or a job manifest")
    p.add_argument(
        "--task-timeout",
        type=_positive,
        default=900,
        metavar="SECONDS",
        help="several files: warn when the job's write time exceeds the task state "
        "machine's timeout (default 900, the template's TaskTimeoutSeconds default)",
    )
    p.add_argument(
        "--table",
        help="describe this table for its write capacity, and read its TTL configuration",
    )
    p.add_argument(
        "--data-table",
        metavar="NAME",
        help="the MBC data table whose TTL commands carry (default: TABLE -command -> -data)",
    )
    add_reader_options(p)
    p.add_argument(
        "--max-wcu", type=_positive, default=None, metavar="N", help="plan at N write units/s"
    )
    p.add_argument(
        "--price-per-million-wru",
        type=_price,
        default=PRICE_PER_MILLION_WRU,
        metavar="P",
        help=f"on-demand write price (default ${PRICE_PER_MILLION_WRU}, us-east-1, Nov 2024)",
    )
    p.add_argument(
        "--price-per-wcu-hour",
        type=_price,
        default=PRICE_PER_WCU_HOUR,
        metavar="P",
        help=f"provisioned write price (default ${PRICE_PER_WCU_HOUR}, us-east-1)",
    )
    p.add_argument(
        "--import-price-per-gb",
        type=_price,
        default=IMPORT_TABLE_PRICE_PER_GB,
        metavar="P",
        help=f"ImportTable price (default ${IMPORT_TABLE_PRICE_PER_GB}, us-east-1)",
    )
    add_batch_options(p)
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="transform engine (default native)",
    )
    p.add_argument("--region", default=None, help="AWS region (default from the environment)")
    p.add_argument("--endpoint-url", default=None, metavar="URL", help="DynamoDB endpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_cmd_plan)

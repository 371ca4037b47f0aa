"""`importer demo`: the whole pipeline on the embedded AWS stand-in, no account.

It starts moto's server on a loopback port (a real HTTP endpoint, so the fast
signed-HTTP writer runs exactly as against AWS), puts a generated CSV with a
few deliberately bad rows into its S3, creates the module's command, data and
history tables, imports from `s3://` with `--sync` (the command records and,
in the same run, the data rows the command state machine would leave), then
imports a small price update in upsert mode -- a file of three columns whose
rows are merged into the products' latest versions, as the framework's own
import does -- and shows a command record, the rejected rows, and one data
record (every attribute kept, the new price) with its history.  The module's
master-data table holds a TTL configuration for the data table, so every
command carries the `ttl` the framework's publish would give it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importer.cli.local_moto import StackState

__all__ = [
    "DEMO_SPEC",
    "PRICE_SPEC",
    "generate_demo_csv",
    "run_demo",
    "update_rows",
]

DEMO_SPEC = """\
# The spec the demo uses: one PRODUCT command record per row.
[record]
type = "PRODUCT"
tenant = "{tenant}"
code = "{sku}"
name = "{name}"

[columns.tenant]
type = "string"
required = true
enum = ["acme", "globex"]
attribute = false

[columns.sku]
type = "string"
required = true
pattern = "^[A-Z0-9-]+$"
max_length = 32

[columns.name]
type = "string"
required = true
max_length = 200

[columns.price]
type = "decimal"
required = true
min = 0

[columns.stock]
type = "integer"
min = 0

[columns.active]
type = "boolean"

[columns.released]
type = "date"

[columns.tags]
type = "json"
"""

HEADER = ["tenant", "sku", "name", "price", "stock", "active", "released", "tags"]

PRICE_SPEC = """\
# The price update: three columns.  upsert merges each row into the product's latest
# version (a partial update): name, stock, tags... stay as they are.
[record]
type = "PRODUCT"
tenant = "{tenant}"
code = "{sku}"

[columns.tenant]
type = "string"
required = true
attribute = false

[columns.sku]
type = "string"
required = true

[columns.price]
type = "decimal"
required = true
min = 0
"""
PRICE_HEADER = ["tenant", "sku", "price"]
#: the demo data table's TTL configuration (days), as MBC's master-data table holds it
DEMO_TTL_DAYS = 365
#: the demo module's tables (`{prefix}-command`, `-data`, `-history`) and bucket
DEMO_PREFIX = "demo-app-master"
DEMO_BUCKET = "importer-demo"


def generate_demo_csv(path: Path, rows: int, *, seed: int = 7) -> int:
    """Write `rows` rows (about 1 in 500 deliberately bad); return how many are bad."""
    rng = random.Random(seed)
    bad = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in range(rows):
            row = [
                rng.choice(["acme", "globex"]),
                f"SKU-{i:07d}",
                f'Product {i} \u2014 "deluxe", size {rng.randint(1, 9)}',
                f"{rng.randint(0, 99999) / 100:.2f}",
                str(rng.randint(0, 500)),
                rng.choice(["true", "false", "yes", "no"]),
                f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                json.dumps({"color": rng.choice(["red", "blue"]), "dims": [i % 7, i % 5]}),
            ]
            if i % 500 == 499:
                bad += 1
                fault = (i // 500) % 4
                if fault == 0:
                    row[3] = "12,5x"  # not a number
                elif fault == 1:
                    row[1] = "sku lower"  # pattern
                elif fault == 2:
                    row[6] = "2024-02-30"  # no such date
                else:
                    row[0] = "initech"  # not in enum
            out.writerow(row)
    return bad


def update_rows(path: Path, count: int = 3) -> list[list[str]]:
    """The first `count` good rows of the demo CSV as a price file: tenant, sku, new price."""
    out: list[list[str]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if len(out) == count:
                break
            if row["tenant"] not in ("acme", "globex"):
                continue
            out.append([row["tenant"], row["sku"], f"{float(row['price']) + 1:.2f}"])
    return out


class _DemoStopped(Exception):
    """An import of the demo stopped (its one-line error is printed already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _import(
    argv: list[str], *, base: Path, cli: Callable[[list[str]], int], note: str = ""
) -> dict[str, Any]:
    """Echo `importer ARGV` and run exactly that, in `base`: what is printed runs as printed.

    The demo's imports go through the console script's own `main` (`cli`, handed
    in by it), so the echoed line is not a description of the run but the run
    itself (same flags, same defaults, same report files relative to `base`).
    """
    import shlex

    print(f"\n$ {shlex.join(['importer', *argv])}" + (f"  # {note}" if note else ""), flush=True)
    here = os.getcwd()
    os.chdir(base)
    try:
        code = cli(argv)
    finally:
        os.chdir(here)
    summary_file = base / argv[argv.index("--summary-json") + 1]
    if code not in (0, 3) or not summary_file.exists():
        raise _DemoStopped(code)
    return json.loads(summary_file.read_text(encoding="utf-8"))


def _run_argv(
    source: str,
    table: str,
    name: str,
    engine: str | None,
    *extra: str,
    spec: str = "products.spec.toml",
) -> list[str]:
    argv = ["run", source, "--spec", spec, "--table", table, *extra]
    argv += ["--sync", "--summary-json", f"{name}.summary.json"]
    if engine:
        argv += ["--engine", engine]
    return argv


def _print_item(item: dict[str, Any], only: tuple[str, ...] | None = None) -> None:
    from boto3.dynamodb.types import TypeDeserializer

    plain = {k: TypeDeserializer().deserialize(v) for k, v in sorted(item.items())}
    for key, value in plain.items():
        if only is None or key in only:
            print(f"  {key:<11} {value}")


def run_demo(
    *,
    cli: Callable[[list[str]], int],
    rows: int = 5000,
    workdir: str | None = None,
    engine: str | None = None,
) -> int:
    """The demo; `cli` is `importer`'s main, which runs each echoed command."""
    from importer.cli.local_moto import LocalStackError, environment, stand_in

    base = Path(workdir or tempfile.mkdtemp(prefix="importer-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    csv_path = base / "products.csv"
    spec_path = base / "products.spec.toml"
    bad = generate_demo_csv(csv_path, rows)
    spec_path.write_text(DEMO_SPEC, encoding="utf-8")
    try:
        # the tables and bucket as `importer local up --prefix demo-app-master --bucket
        # importer-demo` makes them
        with stand_in(prefix=DEMO_PREFIX, bucket=DEMO_BUCKET, in_process=True) as up:
            # the environment `importer local env` prints, so the echoed commands need no
            # flag; a profile or session token of a real account must not mix in
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                os.environ.pop(var, None)
            os.environ.update(environment(up.endpoint, up.region))
            return _show(
                up,
                base=base,
                rows=rows,
                bad=bad,
                csv_path=csv_path,
                engine=engine,
                cli=cli,
            )
    except LocalStackError as exc:
        print(f"importer: error: {exc}", file=sys.stderr)
        return 1
    except _DemoStopped as exc:
        return exc.code


def _show(
    up: StackState,
    *,
    base: Path,
    rows: int,
    bad: int,
    csv_path: Path,
    engine: str | None,
    cli: Callable[[list[str]], int],
) -> int:
    """The demo's steps against the started stand-in."""
    import boto3

    spec_path = base / "products.spec.toml"
    endpoint = up.endpoint
    print(f"embedded AWS stand-in (moto) on {endpoint}")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.upload_file(str(csv_path), DEMO_BUCKET, "incoming/products.csv")
    ddb = boto3.client("dynamodb", endpoint_url=endpoint)
    # MBC's module tables, made by the stand-in: commands (every version), data (the
    # latest), history
    table, data_table, history_table = up.tables
    # the TTL configuration lives in the master module's data table (MBC's master-data),
    # here the demo module's own: every command carries ttl = start + 365 days
    for tenant in ("acme", "globex"):
        ddb.put_item(
            TableName=data_table,
            Item={
                "pk": {"S": f"MASTER#{tenant}"},
                "sk": {"S": f"TTL#{data_table}"},
                "attributes": {"M": {"days": {"N": str(DEMO_TTL_DAYS)}}},
            },
        )
    print(
        f"sample: {rows:,} rows ({bad} deliberately bad) -> s3://{DEMO_BUCKET}/incoming/"
        f"products.csv; spec: {spec_path}"
    )
    print(
        f"the commands below run in {base}, with AWS_ENDPOINT_URL={endpoint} and "
        "dummy credentials (AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
        "AWS_DEFAULT_REGION=us-east-1)"
    )
    source = f"s3://{DEMO_BUCKET}/incoming/products.csv"
    summary = _import(_run_argv(source, table, "products", engine), base=base, cli=cli)
    counts = {
        name: sum(
            page["Count"]
            for page in ddb.get_paginator("scan").paginate(TableName=name, Select="COUNT")
        )
        for name in (table, data_table)
    }
    print(
        f"\ntable {table} now holds {counts[table]:,} command records and "
        f"{data_table} {counts[data_table] - 2:,} data rows "
        "(and the 2 TTL configurations); one command:"
    )
    item = (
        ddb.get_item(
            TableName=table,
            Key={"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#SKU-0000001@1"}},
        ).get("Item")
        or ddb.scan(TableName=table, Limit=1)["Items"][0]
    )
    _print_item(item)
    rejects = base / "products.rejects.csv"
    if rejects.exists():
        print(f"\nrejected rows ({rejects}):")
        with open(rejects, encoding="utf-8") as fh:
            for n, rec in enumerate(csv.reader(fh)):
                if n > 6:
                    print("  ...")
                    break
                if n:
                    print(f"  line {rec[0]}: column {rec[1]!r} = {rec[2]!r}: {rec[3]}")
    updates = update_rows(csv_path)
    update_path = base / "price-update.csv"
    (base / "price-update.spec.toml").write_text(PRICE_SPEC, encoding="utf-8")
    with open(update_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([PRICE_HEADER, *updates])
    again = _import(
        _run_argv(
            update_path.name,
            table,
            "price-update",
            engine,
            "--mode",
            "upsert",
            spec="price-update.spec.toml",
        ),
        base=base,
        cli=cli,
        note=f"{len(updates)} prices, columns {', '.join(PRICE_HEADER)}: merged into the latest "
        "versions (--update replace would write them as whole records)",
    )
    tenant, sku = updates[0][0], updates[0][1]
    pk = f"PRODUCT#{tenant}"
    data_row = ddb.get_item(
        TableName=data_table,
        Key={"pk": {"S": pk}, "sk": {"S": f"PRODUCT#{sku}"}},
        ConsistentRead=True,
    ).get("Item")
    history = ddb.query(
        TableName=history_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": f"PRODUCT#{sku}@"}},
        ConsistentRead=True,
    )["Items"]
    if data_row is not None:
        print(f"\ndata record {pk} / PRODUCT#{sku} (the latest version: new price, rest kept):")
        _print_item(data_row)
    for h in history:
        print(f"\nits history {h['sk']['S']} (as it stood before the update):")
        _print_item(h, only=("sk", "version", "name", "attributes", "updatedAt"))
    print(f"\nfiles: {base}")
    # the deliberately bad rows are the demo's point; a refused write is not
    return 0 if summary["failed"] == 0 and again["failed"] == 0 else 3

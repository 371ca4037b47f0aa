"""`importer demo`: the whole pipeline on the embedded AWS stand-in, no account.

It starts moto's server on a loopback port (a real HTTP endpoint, so the fast
signed-HTTP writer runs exactly as against AWS), puts a generated CSV with a
few deliberately bad rows into its S3, creates the module's command, data and
history tables, imports from `s3://` with `--sync` (the command records and,
in the same run, the data rows the command state machine would leave), then
imports a small price update in upsert mode, and shows a command record, the
rejected rows, and one data record with its history.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from importer.dynamodb.region import DEFAULT_REGION
from importer.mbc.model import TABLE_SCHEMA

__all__ = ["DEMO_SPEC", "generate_demo_csv", "run_demo", "update_rows"]

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
    """The first `count` good rows of the demo CSV with a new price and name (an update file)."""
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if len(out) == count:
                break
            if row["tenant"] not in ("acme", "globex"):
                continue
            price = f"{float(row['price']) + 1:.2f}"
            out.append([row[h] if h not in ("price", "name") else "" for h in HEADER])
            out[-1][HEADER.index("price")] = price
            out[-1][HEADER.index("name")] = row["name"] + " (new price)"
    return out


def _import(
    source: str,
    *,
    spec_path: Path,
    table: str,
    endpoint: str,
    base: Path,
    engine: str,
    mode: str = "insert",
    name: str = "products",
) -> Any:
    """The demo's import: the same pipeline and driver as `importer run --sync`."""
    import boto3

    from importer.cli.console import Progress, print_summary
    from importer.input.batching import AWS_MAX_INPUT_BYTES, DEFAULT_MAX_ITEMS
    from importer.run.checkpoint import spec_digest
    from importer.run.driver import RunConfig, run_import
    from importer.run.pipeline import PipelineSettings, open_pipeline
    from importer.transform.spec import load_spec

    spec = load_spec(spec_path)
    settings = PipelineSettings(
        spec=spec, table=table, endpoint_url=endpoint, engine=engine, mode=mode, sync=True
    )
    config = RunConfig(
        source=source,
        spec=spec,
        table=table,
        batch_items=DEFAULT_MAX_ITEMS,
        batch_bytes=AWS_MAX_INPUT_BYTES,
        rejects_path=base / f"{name}.rejects.csv",
        failures_path=base / f"{name}.failures.csv",
        checkpoint_path=base / f"{name}.checkpoint.jsonl",
        spec_digest=spec_digest(spec_path),
        mode=settings.mode,
    )
    progress = Progress()
    with open_pipeline(settings) as pipeline:
        try:
            summary = run_import(
                config, pipeline=pipeline, progress=progress, s3_client=boto3.client("s3")
            )
        finally:
            progress.finish()
    data = summary.to_json()
    (base / f"{name}.summary.json").write_text(json.dumps(data, indent=2) + "\n")
    for notice in summary.notices:
        print(f"importer: note: {notice}", file=sys.stderr)
    print_summary(data, writing=True)
    print(f"synced {summary.synced:,} data rows (data and history tables applied in this run)")
    return summary


def _print_item(item: dict[str, Any], only: tuple[str, ...] | None = None) -> None:
    from boto3.dynamodb.types import TypeDeserializer

    plain = {k: TypeDeserializer().deserialize(v) for k, v in sorted(item.items())}
    for key, value in plain.items():
        if only is None or key in only:
            print(f"  {key:<11} {value}")


def run_demo(*, rows: int = 5000, workdir: str | None = None, engine: str | None = None) -> int:
    import boto3

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print(
            "importer: error: the demo's AWS stand-in is not installed: "
            "pip install 'importer[demo]' (or -e '.[demo]' in a clone)",
            file=sys.stderr,
        )
        return 1

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", DEFAULT_REGION),
    ):
        os.environ[var] = value
    os.environ.pop("AWS_PROFILE", None)
    base = Path(workdir or tempfile.mkdtemp(prefix="importer-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    csv_path = base / "products.csv"
    spec_path = base / "products.spec.toml"
    bad = generate_demo_csv(csv_path, rows)
    spec_path.write_text(DEMO_SPEC, encoding="utf-8")

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
        print(f"embedded AWS stand-in (moto) on {endpoint}")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="importer-demo")
        s3.upload_file(str(csv_path), "importer-demo", "incoming/products.csv")
        ddb = boto3.client("dynamodb", endpoint_url=endpoint)
        table = "demo-app-master-command"
        # MBC's module tables: commands (every version), data (the latest), history
        for name in (table, "demo-app-master-data", "demo-app-master-history"):
            ddb.create_table(TableName=name, **TABLE_SCHEMA)  # MBC's key schema
        print(
            f"sample: {rows:,} rows ({bad} deliberately bad) -> s3://importer-demo/incoming/"
            f"products.csv; spec: {spec_path}"
        )
        print("\n$ importer run s3://importer-demo/incoming/products.csv --sync")
        summary = _import(
            "s3://importer-demo/incoming/products.csv",
            spec_path=spec_path,
            table=table,
            endpoint=endpoint,
            base=base,
            engine=engine or "native",
        )
        counts = {
            name: sum(
                page["Count"]
                for page in ddb.get_paginator("scan").paginate(TableName=name, Select="COUNT")
            )
            for name in (table, "demo-app-master-data")
        }
        print(
            f"\ntable {table} now holds {counts[table]:,} command records and "
            f"demo-app-master-data {counts['demo-app-master-data']:,} data rows; one command:"
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
        with open(update_path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([HEADER, *updates])
        print(f"\n$ importer run {update_path.name} --mode upsert --sync  # {len(updates)} prices")
        again = _import(
            str(update_path),
            spec_path=spec_path,
            table=table,
            endpoint=endpoint,
            base=base,
            engine=engine or "native",
            mode="upsert",
            name="price-update",
        )
        tenant, sku = updates[0][0], updates[0][1]
        pk = f"PRODUCT#{tenant}"
        data_row = ddb.get_item(
            TableName="demo-app-master-data",
            Key={"pk": {"S": pk}, "sk": {"S": f"PRODUCT#{sku}"}},
            ConsistentRead=True,
        ).get("Item")
        history = ddb.query(
            TableName="demo-app-master-history",
            KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": f"PRODUCT#{sku}@"}},
            ConsistentRead=True,
        )["Items"]
        if data_row is not None:
            print(f"\ndata record {pk} / PRODUCT#{sku} (the latest version):")
            _print_item(data_row)
        for h in history:
            print(f"\nits history {h['sk']['S']} (as it stood before the update):")
            _print_item(h, only=("sk", "version", "name", "attributes", "updatedAt"))
        print(f"\nfiles: {base}")
        return 0 if summary.failed == 0 and again.failed == 0 else 3
    finally:
        server.stop()

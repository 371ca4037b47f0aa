"""The generated import-csv ASL, unmodified, end to end on moto's Step Functions engine.

moto S3 holds the CSV and the spec, moto DynamoDB the table; moto's ASL
interpreter runs the Distributed Map (see :mod:`tests.sfn_shim` for the few
things it lacks) and its Lambda task calls :func:`importer.aws.handler.handle_event`
in-process.  The same CSV through the local driver must give the same batches
and the same table.
"""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from typing import Any
from unittest import mock

import boto3
import pytest

from importer.aws.handler import handle_event
from importer.aws.statemachine import (
    LAMBDA_ARN_PLACEHOLDER,
    RESULT_BUCKET_PLACEHOLDER,
    import_csv_definition,
)
from importer.dynamodb.client import Boto3DynamoClient
from importer.dynamodb.errors import DynamoError
from importer.input.batching import AWS_MAX_INPUT_BYTES, Batcher
from importer.input.options import CsvOptions
from importer.input.source import CsvReader
from importer.transform.context import normalise_timestamp
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC, scan_all
from tests.support.sfn_shim import MOTO_SFN_CONFIG, sfn_shim

REGION = "us-east-1"
LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:csv-rows-handler"
ROLE_ARN = "arn:aws:iam::123456789012:role/import-csv"
ENGINE = "native"
RUN_FIELDS = {"requestId", "source", "createdAt", "updatedAt"}


def substituted(**options: Any) -> str:
    """What CloudFormation's DefinitionSubstitutions makes of the generated ASL."""
    text = json.dumps(import_csv_definition(**options))
    text = text.replace(LAMBDA_ARN_PLACEHOLDER, LAMBDA_ARN)
    return text.replace(RESULT_BUCKET_PLACEHOLDER, "results")


class Recording(Boto3DynamoClient):
    """The boto3 client (moto) remembering which items went out together, and refusing
    (ValidationException, as DynamoDB does for an invalid item) writes that name a
    code in `refuse` -- a service-side refusal no transform could have foreseen."""

    def __init__(self, refuse: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(region=REGION, **kwargs)
        self.calls: list[tuple[str, ...]] = []
        self.refuse = refuse

    def post(self, operation, body):
        if operation == "BatchWriteItem":
            doc = json.loads(body)
            [requests] = doc["RequestItems"].values()
            items = [r["PutRequest"]["Item"] for r in requests]
            if any(it["code"]["S"] in self.refuse for it in items):
                raise DynamoError(
                    "ValidationException", "One or more parameter values were invalid"
                )
            self.calls.append(tuple(sorted(it["sk"]["S"] for it in items)))
        return super().post(operation, body)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    from moto import mock_aws

    tmp_path = tmp_path_factory.mktemp("sfn-e2e")

    with mock_aws(config=MOTO_SFN_CONFIG):
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("inbox", "import-config", "results"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="import-config", Key="spec.toml", Body=PRODUCT_SPEC.encode())
        ddb = boto3.client("dynamodb", region_name=REGION)
        for table in ("sfn-command", "local-command", "tol-15-command", "tol-5-command"):
            ddb.create_table(TableName=table, **KEY_SCHEMA)
        spec_path = tmp_path / "spec.toml"
        spec_path.write_text(PRODUCT_SPEC)
        yield {
            "s3": s3,
            "sfn": boto3.client("stepfunctions", region_name=REGION),
            "spec_path": spec_path,
            "tmp": tmp_path,
        }


@pytest.fixture(scope="module")
def imported(cloud):
    """One 2000-row CSV through the generated machine, then through the local CLI.

    Both runs write ~2000 items into moto DynamoDB (about 1 ms per item there), so
    they are done once for the module and the tests below check different things.
    """
    import importer.run.pipeline as pipeline_mod
    from importer.cli import main as cli

    body, rows = make_csv(2000, BAD)
    cloud["s3"].put_object(Bucket="inbox", Key="products.csv", Body=body)
    definition = substituted(max_items_per_batch=10)
    desc, log, sfn_writer = run_machine(cloud, definition, "products.csv", "import-csv")

    local_writers: list[Recording] = []

    def recording_client(settings):
        local_writers.append(Recording(workers=settings.workers))
        return local_writers[-1]

    tmp = cloud["tmp"]
    with mock.patch.object(pipeline_mod, "open_client", recording_client):
        code = cli.main(
            [
                "run",
                "s3://inbox/products.csv",
                "--spec",
                str(cloud["spec_path"]),
                "--table",
                "local-command",
                "--writer",
                "boto3",
                "--batch-items",
                "10",
                "--engine",
                ENGINE,
                "--region",
                REGION,
                "--quiet",
                "--rejects",
                str(tmp / "rejects.csv"),
                "--failures",
                str(tmp / "failures.csv"),
                "--checkpoint",
                str(tmp / "checkpoint.jsonl"),
            ]
        )
    return {
        "body": body,
        "rows": rows,
        "definition": definition,
        "desc": desc,
        "log": log,
        "sfn_writer": sfn_writer,
        "cli_code": code,
        "local_writers": local_writers,
        "cli_rejects": tmp / "rejects.csv",
    }


def run_machine(
    cloud,
    definition: str,
    key: str,
    name: str,
    table: str = "sfn-command",
    refuse: frozenset[str] = frozenset(),
    extra_input: dict[str, Any] | None = None,
):
    """Create the machine from `definition`, run it, wait; return (describe, log, client)."""
    writer = Recording(refuse, workers=4)

    def csv_rows_handler(event):
        return handle_event(event, client=writer, s3_client=cloud["s3"], engine=ENGINE)

    sfn = cloud["sfn"]
    with sfn_shim({LAMBDA_ARN: csv_rows_handler}) as log:
        arn = sfn.create_state_machine(name=name, definition=definition, roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
        assert sfn.describe_state_machine(stateMachineArn=arn)["definition"] == definition
        execution = sfn.start_execution(
            stateMachineArn=arn,
            name=f"{name}-run",
            input=json.dumps(
                {
                    "bucket": "inbox",
                    "key": key,
                    "table": table,
                    "spec": "s3://import-config/spec.toml",
                    "rejects": "s3://import-config/rejects",
                    **(extra_input or {}),
                }
            ),
        )["executionArn"]
        deadline = time.monotonic() + 240
        while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "execution did not finish"
            time.sleep(0.05)
    return desc, log, writer


def make_csv(n: int, bad: dict[int, tuple[str, str]]) -> tuple[bytes, list[dict[str, str]]]:
    """`n` product rows; rows in `bad` get (column, value) that the spec refuses."""
    rows = []
    for i in range(n):
        row = {
            "sku": f"SKU-{i:05d}",
            "name": f"Widget {i}",
            "price": f"{i % 97}.{i % 100:02d}",
            "qty": str(i % 13 - 3),
            "active": "yes" if i % 3 else "no",
            "note": "ignored",
        }
        if i % 50 == 7:
            row["name"] = f'Widget, "large" {i}\nsecond line, too'
        if i % 50 == 11:
            row["note"] = "a\\,b"  # ItemReader: backslash escapes the delimiter
        if i in bad:
            column, value = bad[i]
            row[column] = value
        rows.append(row)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(list(rows[0]))
    for row in rows:
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(row.values())
        text = line.getvalue()
        if "\\" in row["note"]:
            text = text.replace('"a\\,b"', "a\\,b")
        out.write(text)
    for row in rows:
        if "\\" in row["note"]:
            row["note"] = "a,b"
    return out.getvalue().encode(), rows


BAD = {
    3: ("sku", "bad sku"),
    400: ("price", "-1"),
    777: ("qty", "many"),
    1500: ("active", "maybe"),
    1999: ("name", ""),
}


def expected_attributes(row: dict[str, str]) -> dict[str, Any]:
    return {
        "sku": {"S": row["sku"]},
        "name": {"S": row["name"]},
        "price": {"N": format(Decimal(row["price"]).normalize(), "f")},
        "qty": {"N": str(int(row["qty"]))},
        "active": {"BOOL": row["active"] == "yes"},
    }


def strip_run(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in RUN_FIELDS}


def test_generated_definition_imports_csv_end_to_end(cloud, imported):
    rows, desc, log = imported["rows"], imported["desc"], imported["log"]
    # the machine ran exactly the generated ASL, with only the template's substitutions
    assert json.loads(imported["definition"]) == import_csv_definition(
        lambda_arn=LAMBDA_ARN, max_items_per_batch=10, result_bucket="results"
    )
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    name = desc["name"]
    start = normalise_timestamp(log.invocations[0][1]["input"]["BatchInput"]["StartTime"])

    # every row, item by item
    table = scan_all("sfn-command")
    good = [r for i, r in enumerate(rows) if i not in BAD]
    assert len(table) == len(good) == 1995
    for row in good:
        item = table.pop(("PRODUCT#acme", f"PRODUCT#{row['sku']}@1"))
        assert item["attributes"]["M"] == expected_attributes(row), row
        assert item["code"] == {"S": row["sku"]} and item["name"] == {"S": row["name"]}
        assert item["type"] == {"S": "PRODUCT"} and item["tenantCode"] == {"S": "acme"}
        assert item["source"] == {"S": f"import-csv:{name}"}
        assert item["createdAt"] == {"S": start}
        assert item["requestId"]["S"].startswith(f"{name}:")
    assert table == {}

    # rejects stored in S3, one CSV per failing batch, under the execution name
    s3 = cloud["s3"]
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket="import-config", Prefix="rejects/")["Contents"]
    ]
    assert keys and all(k.startswith(f"rejects/{name}/") for k in keys)
    rejected = {}
    for key in keys:
        lines = list(
            csv.reader(
                io.StringIO(s3.get_object(Bucket="import-config", Key=key)["Body"].read().decode())
            )
        )
        assert key.endswith(".rejects.csv")
        assert lines[0][:4] == ["line", "column", "value", "reason"]
        for rec in lines[1:]:
            rejected[rec[4]] = rec[1]  # the row's sku -> the refused column
    assert rejected == {rows[i]["sku"]: column for i, (column, _) in BAD.items()}

    # ResultWriter: manifest plus SUCCEEDED_0.json, one entry per child
    out = json.loads(desc["output"])
    manifest_key = out["ResultWriterDetails"]["Key"]
    assert out["ResultWriterDetails"]["Bucket"] == "results"
    assert manifest_key.startswith("import-results/") and manifest_key.endswith("/manifest.json")
    manifest = json.loads(s3.get_object(Bucket="results", Key=manifest_key)["Body"].read())
    assert manifest["MapRunArn"] == out["MapRunArn"] and manifest["ResultFiles"]["FAILED"] == []
    [succeeded] = manifest["ResultFiles"]["SUCCEEDED"]
    children = json.loads(s3.get_object(Bucket="results", Key=succeeded["Key"])["Body"].read())
    assert len(children) == 200 == len(log.invocations)
    summaries = [json.loads(c["Output"]) for c in children]
    assert sum(s["written"] for s in summaries) == 1995
    assert sum(s["rejected"] for s in summaries) == 5
    assert all(c["Status"] == "SUCCEEDED" for c in children)

    # ItemReader rules reached the children: header order, quoted newline, escaped comma
    items = [it for _, ev in log.invocations for it in ev["input"]["Items"]]
    assert all(list(it) == ["sku", "name", "price", "qty", "active", "note"] for it in items)
    assert {it["sku"]: it for it in items}["SKU-00007"]["name"] == rows[7]["name"]
    assert "\n" in rows[7]["name"] and {it["sku"]: it for it in items}["SKU-00011"]["note"] == "a,b"

    # every child got the MBC envelope around {"Items", "BatchInput"}
    for _, event in log.invocations:
        assert event["source"] == "step-function"
        assert event["context"]["State"]["Name"] == "csv_rows_handler"
        batch_input = event["input"]["BatchInput"]
        assert batch_input["ExecutionName"] == name
        assert batch_input["Attributes"]["table"] == "sfn-command"


def test_local_driver_gives_same_batches_and_table(cloud, imported):
    desc, body = imported["desc"], imported["body"]
    assert desc["status"] == "SUCCEEDED", desc.get("cause")

    # Batches: the Map's children in item order (ResultWriter) == the run's batcher on the same
    # object with the definition's limits, as the local driver cuts them.
    out = json.loads(desc["output"])
    manifest = json.loads(
        cloud["s3"]
        .get_object(Bucket="results", Key=out["ResultWriterDetails"]["Key"])["Body"]
        .read()
    )
    children = json.loads(
        cloud["s3"]
        .get_object(Bucket="results", Key=manifest["ResultFiles"]["SUCCEEDED"][0]["Key"])["Body"]
        .read()
    )
    children.sort(key=lambda c: int(c["Name"]))
    sfn_batches = [json.loads(c["Input"])["Items"] for c in children]
    batch_input = json.loads(children[0]["Input"])["BatchInput"]
    reader = CsvReader(io.BytesIO(body), CsvOptions())
    local_batches = [
        [dict(zip(reader.header, fields, strict=True)) for _, fields in b.rows]
        for b in Batcher(
            max_items=10,
            max_bytes=AWS_MAX_INPUT_BYTES,
            batch_input=batch_input,
            header=reader.header,
        ).cut(reader, reader.header)
    ]
    assert sfn_batches == local_batches

    # The local driver itself (CLI, boto3 writer): same groups of items written together...
    from importer.cli import main as cli

    code, local_writers = imported["cli_code"], imported["local_writers"]
    assert code == cli.EXIT_PARTIAL  # finished, with rejected rows
    assert len(local_writers) == 1
    sfn_calls = imported["sfn_writer"].calls
    assert len(sfn_calls) == 200 and sorted(local_writers[0].calls) == sorted(sfn_calls)

    # ...and the same table, up to the run-specific fields
    sfn_table = scan_all("sfn-command")
    local_table = scan_all("local-command")
    assert sfn_table.keys() == local_table.keys() and len(sfn_table) == 1995
    for key, item in sfn_table.items():
        assert strip_run(item) == strip_run(local_table[key]), key
    rejected_lines = list(csv.reader(open(imported["cli_rejects"], encoding="utf-8")))
    assert len(rejected_lines) == 1 + len(BAD)


@pytest.mark.parametrize(("tolerated", "status"), [(15, "SUCCEEDED"), (5, "FAILED")])
def test_a_batch_with_refused_rows_fails_its_child_within_tolerance(cloud, tolerated, status):
    # 100 rows, 10 batches; DynamoDB refuses one row of the fourth batch (and so the whole
    # request it is in) -> that child fails: 10% of items are in failed batches.  Bad data
    # (row 55) is only rejected: its batch does not fail.
    body, rows = make_csv(100, {55: ("sku", "bad sku")})
    cloud["s3"].put_object(Bucket="inbox", Key="some-bad.csv", Body=body)
    definition = substituted(max_items_per_batch=10, tolerated_failure_percentage=tolerated)
    table_name = f"tol-{tolerated}-command"
    refused = frozenset(rows[i]["sku"] for i in (30, 31, 32, 33, 34, 35, 36, 37, 38, 39))
    desc, log, _ = run_machine(
        cloud,
        definition,
        "some-bad.csv",
        f"import-csv-{tolerated}",
        table=table_name,
        refuse=refused,
    )

    assert desc["status"] == status, desc.get("cause")
    assert len(log.invocations) == 10
    table = scan_all(table_name)
    assert len(table) == 89
    assert not any(f"PRODUCT#{rows[i]['sku']}@1" in sk for _, sk in table for i in range(30, 40))
    if status == "FAILED":
        assert desc["error"] == "States.ExceedToleratedFailureThreshold"
        return
    out = json.loads(desc["output"])
    manifest = json.loads(
        cloud["s3"]
        .get_object(Bucket="results", Key=out["ResultWriterDetails"]["Key"])["Body"]
        .read()
    )
    [failed_file] = manifest["ResultFiles"]["FAILED"]
    [failed] = json.loads(
        cloud["s3"].get_object(Bucket="results", Key=failed_file["Key"])["Body"].read()
    )
    assert failed["Status"] == "FAILED" and failed["Error"] == "BatchFailed"
    assert "DynamoDB refused 10 row(s) of the batch" in failed["Cause"]
    assert [r["sku"] for r in json.loads(failed["Input"])["Items"]] == [
        rows[i]["sku"] for i in range(30, 40)
    ]


def _seed(table: str, rows: list[dict[str, str]]) -> None:
    """Entities already stored at version 1 by an earlier import."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    for row in rows:
        ddb.put_item(
            TableName=table,
            Item={
                "pk": {"S": "PRODUCT#acme"},
                "sk": {"S": f"PRODUCT#{row['sku']}@1"},
                "version": {"N": "1"},
                "requestId": {"S": "earlier#2"},
            },
        )


def _reject_rows(lines: list[list[str]]) -> list[tuple[str, ...]]:
    """A rejects file without its `line` column: the rest must agree everywhere."""
    return sorted(tuple(rec[1:]) for rec in lines[1:])


def test_step_functions_local_run_and_lambda_agree(cloud):
    """One file with bad rows, rows DynamoDB refuses and entities that already exist, fed
    to the generated state machine, to `importer run` and to the Lambda handler batch by
    batch: the same counts, the same failed batches, the same rejects."""
    import importer.run.pipeline as pipeline_mod
    from importer.cli import main as cli

    body, rows = make_csv(60, {4: ("sku", "bad sku"), 33: ("price", "-1")})
    refused = frozenset({rows[21]["sku"]})
    existing = [rows[i] for i in (7, 8, 45)]
    cloud["s3"].put_object(Bucket="inbox", Key="agree.csv", Body=body)
    ddb = boto3.client("dynamodb", region_name=REGION)
    for table in ("agree-sfn-command", "agree-local-command", "agree-lambda-command"):
        ddb.create_table(TableName=table, **KEY_SCHEMA)
        _seed(table, existing)

    # 1. the state machine
    definition = substituted(max_items_per_batch=10, tolerated_failure_percentage=50)
    desc, log, _ = run_machine(
        cloud, definition, "agree.csv", "agree", table="agree-sfn-command", refuse=refused
    )
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    manifest = json.loads(
        cloud["s3"]
        .get_object(Bucket="results", Key=out["ResultWriterDetails"]["Key"])["Body"]
        .read()
    )
    sfn_failed = []
    for f in manifest["ResultFiles"]["FAILED"]:
        sfn_failed += json.loads(
            cloud["s3"].get_object(Bucket="results", Key=f["Key"])["Body"].read()
        )
    sfn_summaries = []
    for f in manifest["ResultFiles"]["SUCCEEDED"]:
        children = json.loads(cloud["s3"].get_object(Bucket="results", Key=f["Key"])["Body"].read())
        sfn_summaries += [json.loads(c["Output"]) for c in children]
    for c in sfn_failed:  # a failed child's summary rides in its error message
        message = json.loads(c["Cause"])["errorMessage"]
        sfn_summaries.append(json.loads(message.split(": ", 1)[1]))
    sfn_rejects: list[list[str]] = [[]]
    for obj in cloud["s3"].list_objects_v2(Bucket="import-config", Prefix="rejects/agree-run/")[
        "Contents"
    ]:
        text = cloud["s3"].get_object(Bucket="import-config", Key=obj["Key"])["Body"].read()
        if obj["Key"].endswith(".rejects.csv"):
            sfn_rejects += list(csv.reader(io.StringIO(text.decode())))[1:]

    # 2. the local run
    tmp = cloud["tmp"]
    with mock.patch.object(pipeline_mod, "open_client", lambda s: Recording(refused, workers=4)):
        code = cli.main(
            [
                "run",
                "s3://inbox/agree.csv",
                "--spec",
                str(cloud["spec_path"]),
                "--table",
                "agree-local-command",
                "--batch-items",
                "10",
                "--region",
                REGION,
                "--quiet",
                "--rejects",
                str(tmp / "agree.rejects.csv"),
                "--summary-json",
                str(tmp / "agree.json"),
                "--checkpoint",
                str(tmp / "agree.jsonl"),
            ]
        )
    assert code == cli.EXIT_PARTIAL
    local = json.loads((tmp / "agree.json").read_text())
    local_rejects = list(csv.reader(open(tmp / "agree.rejects.csv", encoding="utf-8")))

    # 3. the Lambda handler, batch by batch
    from importer.aws.handler import BatchFailed

    client = Recording(refused, workers=4)
    lambda_summaries, lambda_failed, lambda_rejects = [], 0, [[]]
    for n, (_, event) in enumerate(log.invocations):
        event = json.loads(json.dumps(event))
        event["input"]["BatchInput"]["Attributes"]["table"] = "agree-lambda-command"
        event["input"]["BatchInput"]["Attributes"]["rejects"] = str(tmp / f"agree-lambda-{n}")
        try:
            summary = handle_event(event, client=client, s3_client=cloud["s3"], engine=ENGINE)
        except BatchFailed as exc:
            summary = exc.summary
            lambda_failed += 1
        lambda_summaries.append(summary)
        if summary["rejects"]:
            lambda_rejects += list(csv.reader(open(summary["rejects"], encoding="utf-8")))[1:]

    def totals(summaries):
        keys = ("rows", "written", "rejected", "existing", "failed")
        return {k: sum(s[k] for s in summaries) for k in keys}

    want = {"rows": 60, "written": 54, "rejected": 5, "existing": 3, "failed": 1}
    assert totals(sfn_summaries) == totals(lambda_summaries) == want
    assert {k: local[k] for k in want} == want
    assert len(sfn_failed) == lambda_failed == local["failed_batches"] == 1
    assert _reject_rows(sfn_rejects) == _reject_rows(lambda_rejects) == _reject_rows(local_rejects)
    assert len(_reject_rows(local_rejects)) == 5


def _typed_products(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The CSV's products with typed values: numbers, booleans (a bad value stays text)."""
    typed = []
    for row in rows:
        item: dict[str, Any] = {"sku": row["sku"], "name": row["name"], "note": row["note"]}
        item["price"] = float(row["price"]) if row["price"] != "-1" else -1
        item["qty"] = int(row["qty"]) if row["qty"].lstrip("-").isdigit() else row["qty"]
        item["active"] = row["active"] == "yes"
        typed.append(item)
    return typed


def _parquet_bytes(items: list[dict[str, Any]]) -> bytes:
    """`items` as a Parquet object: typed columns (a column holding a misfit stays text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {}
    for name in items[0]:
        values = [item[name] for item in items]
        kinds = {type(v) for v in values}
        if kinds == {int, float}:
            values = [float(v) for v in values]
        elif len(kinds) > 1:  # a bad value: the column is text, as an export would keep it
            values = [json.dumps(v) if not isinstance(v, str) else v for v in values]
        columns[name] = pa.array(values)
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, row_group_size=40)
    return out.getvalue()


def test_a_json_array_runs_through_the_machine_to_the_csv_s_records(cloud):
    """ReaderConfig InputType JSON (moto's engine reads JSON arrays itself): the same products
    as a typed JSON array write the records the CSV writes, but for the run's own fields."""
    body, rows = make_csv(120, {5: ("qty", "many"), 9: ("price", "-1")})
    typed = _typed_products(rows)
    s3, ddb = cloud["s3"], boto3.client("dynamodb", region_name=REGION)
    s3.put_object(Bucket="inbox", Key="e2e.csv", Body=body)
    s3.put_object(Bucket="inbox", Key="e2e.json", Body=json.dumps(typed).encode())
    tables = {}
    for kind, key in (("CSV", "e2e.csv"), ("JSON", "e2e.json")):
        table = f"e2e-{kind.lower()}-command"
        ddb.create_table(TableName=table, **KEY_SCHEMA)
        definition = substituted(max_items_per_batch=10, input_type=kind)
        desc, _log, _writer = run_machine(cloud, definition, key, f"import-{kind}", table)
        assert desc["status"] == "SUCCEEDED", desc
        tables[kind] = {k: strip_run(v) for k, v in scan_all(table).items()}
    assert len(tables["CSV"]) == 118
    assert tables["JSON"] == tables["CSV"]


@pytest.mark.parametrize("kind", ["JSONL", "PARQUET", "MANIFEST"])
def test_jsonl_parquet_and_an_athena_manifest_run_through_the_machine_to_the_csv_s_records(
    cloud, kind
):
    """ReaderConfig InputType JSONL, PARQUET, and an Athena data manifest (ManifestType
    ATHENA_DATA) listing two Parquet objects: the generated machine reads each (the shim's
    ItemReader, sfn_shim 8.), batches the items, and the child writes the records the CSV
    writes (rejects included), but for the run's own fields."""
    pytest.importorskip("pyarrow")
    body, rows = make_csv(90, {4: ("qty", "many"), 11: ("price", "-1")})
    typed = _typed_products(rows)
    s3, ddb = cloud["s3"], boto3.client("dynamodb", region_name=REGION)
    s3.put_object(Bucket="inbox", Key=f"base-{kind}.csv", Body=body)
    options: dict[str, Any] = {"input_type": kind}
    if kind == "JSONL":
        key = "e2e.jsonl"
        lines = "\n".join(json.dumps(item, separators=(",", ":")) for item in typed)
        s3.put_object(Bucket="inbox", Key=key, Body=lines.encode() + b"\n")
    elif kind == "PARQUET":
        key = "e2e.parquet"
        s3.put_object(Bucket="inbox", Key=key, Body=_parquet_bytes(typed))
    else:
        key = "unload/e2e-manifest.csv"
        parts = []
        for i, chunk in enumerate((typed[:50], typed[50:])):
            s3.put_object(
                Bucket="inbox", Key=f"unload/part-{i}.parquet", Body=_parquet_bytes(chunk)
            )
            parts.append(f"s3://inbox/unload/part-{i}.parquet")
        s3.put_object(Bucket="inbox", Key=key, Body="\n".join(parts).encode() + b"\n")
        options.update(manifest_type="ATHENA_DATA", data_type="PARQUET")
    tables = {}
    for name, source, opts in (("csv", f"base-{kind}.csv", {}), ("typed", key, options)):
        table = f"e2e-{kind.lower()}-{name}-command"
        ddb.create_table(TableName=table, **KEY_SCHEMA)
        definition = substituted(max_items_per_batch=10, **opts)
        desc, log, _writer = run_machine(cloud, definition, source, f"i-{kind}-{name}", table)
        assert desc["status"] == "SUCCEEDED", desc
        tables[name] = {k: strip_run(v) for k, v in scan_all(table).items()}
        if name == "typed":
            # the children got typed items, ten to a batch, every item once
            batches = [event["input"]["Items"] for _, event in log.invocations]
            items = [i for batch in batches for i in batch]
            assert len(items) == 90 and all(len(batch) <= 10 for batch in batches)
            assert isinstance(items[0]["price"], float) and isinstance(items[0]["active"], bool)
    assert len(tables["csv"]) == 88
    assert tables["typed"] == tables["csv"]


def test_an_athena_manifest_naming_a_missing_object_fails_the_map_run(cloud):
    """A listed object that is not there: the ItemReader fails (States.ItemReaderFailed),
    the run stops before any child runs."""
    pytest.importorskip("pyarrow")
    s3 = cloud["s3"]
    key = "unload/missing-manifest.csv"
    s3.put_object(Bucket="inbox", Key=key, Body=b"s3://inbox/unload/not-there.parquet\n")
    definition = substituted(
        max_items_per_batch=10,
        input_type="MANIFEST",
        manifest_type="ATHENA_DATA",
        data_type="PARQUET",
    )
    desc, log, _writer = run_machine(cloud, definition, key, "i-missing-object")
    assert desc["status"] == "FAILED"
    assert desc.get("error") == "States.ItemReaderFailed", desc
    assert "not-there.parquet" in desc.get("cause", ""), desc
    assert log.invocations == []


INVENTORY_SPEC = """\
[record]
type = "OBJECT"
tenant = "acme"
code = "{Key}"
name = "{Key}"

[columns.Bucket]
type = "string"
required = true

[columns.Key]
type = "string"
required = true
pattern = "^[a-z0-9/._-]+$"

[columns.Size]
type = "integer"
min = 0

[input]
manifest_type = "S3_INVENTORY"
"""


def _inventory(s3: Any, prefix: str, files: list[list[tuple[str, str, str]]]) -> str:
    """An S3 Inventory report: gzip CSV files (bucket, key, size; no header) in the
    bucket "inventory" under `prefix`, and the manifest.json listing them; its key."""
    import gzip

    keys = []
    for n, rows in enumerate(files):
        key = f"{prefix}/data/part-{n}.csv.gz"
        body = "".join(f'"{b}","{k}","{size}"\n' for b, k, size in rows).encode()
        s3.put_object(Bucket="inventory", Key=key, Body=gzip.compress(body))
        keys.append(key)
    doc = {
        "sourceBucket": "lake",
        "destinationBucket": "arn:aws:s3:::inventory",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": k, "size": 1, "MD5checksum": "0"} for k in keys],
    }
    manifest = f"{prefix}/manifest.json"
    s3.put_object(Bucket="inventory", Key=manifest, Body=json.dumps(doc).encode())
    return manifest


def _inventory_rows(n: int, start: int = 0) -> list[tuple[str, str, str]]:
    """Listed objects; every 9th has a key the spec's pattern refuses (a reject)."""
    return [
        ("lake", f"exports/obj-{i:04d}.bin" if i % 9 else f"exports/Bad Key {i}", str(i * 7))
        for i in range(start, start + n)
    ]


def test_an_s3_inventory_manifest_runs_through_the_machine_to_the_local_run_s_records(cloud):
    """ReaderConfig InputType MANIFEST, ManifestType S3_INVENTORY: the machine reads the
    manifest.json's gzip CSV files (sfn_shim 8.), one item per listed object, and the
    child writes the very records `importer run` writes from the same manifest on S3
    (read object by object through moto S3), rejects included."""
    import importer.run.pipeline as pipeline_mod
    from importer.cli import main as cli

    s3, ddb = cloud["s3"], boto3.client("dynamodb", region_name=REGION)
    s3.create_bucket(Bucket="inventory")
    s3.put_object(Bucket="import-config", Key="inventory.toml", Body=INVENTORY_SPEC.encode())
    files = [_inventory_rows(23), _inventory_rows(30, 23), _inventory_rows(7, 53)]
    key = _inventory(s3, "lake/daily/2026-12-07", files)
    for table in ("inv-sfn-command", "inv-local-command"):
        ddb.create_table(TableName=table, **KEY_SCHEMA)
    definition = substituted(
        max_items_per_batch=10, input_type="MANIFEST", manifest_type="S3_INVENTORY"
    )
    assert json.loads(definition)["States"]["import-csv"]["ItemReader"]["ReaderConfig"] == {
        "InputType": "MANIFEST"
    }
    desc, log, _writer = run_machine(
        cloud,
        definition,
        key,
        "i-inventory",
        "inv-sfn-command",
        extra_input={"bucket": "inventory", "spec": "s3://import-config/inventory.toml"},
    )
    assert desc["status"] == "SUCCEEDED", desc
    items = [i for _, event in log.invocations for i in event["input"]["Items"]]
    # children run side by side: which batch's invocation is logged first is theirs to say
    assert (
        len(items) == 60
        and {
            "Bucket": "lake",
            "Key": "exports/Bad Key 0",
            "Size": "0",
        }
        in items
    )
    assert sorted(int(i["Size"]) for i in items) == [i * 7 for i in range(60)]

    spec_path = cloud["tmp"] / "inventory.toml"
    spec_path.write_text(INVENTORY_SPEC)
    tmp = cloud["tmp"]
    with mock.patch.object(
        pipeline_mod, "open_client", lambda settings: Recording(workers=settings.workers)
    ):
        code = cli.main(
            [
                "run",
                f"s3://inventory/{key}",
                "--spec",
                str(spec_path),
                "--table",
                "inv-local-command",
                "--writer",
                "boto3",
                "--batch-items",
                "10",
                "--region",
                REGION,
                "--quiet",
                "--rejects",
                str(tmp / "inv-rejects.csv"),
                "--checkpoint",
                str(tmp / "inv-checkpoint.jsonl"),
            ]
        )
    assert code == cli.EXIT_PARTIAL  # rows were rejected: the run says so by its exit code
    sfn_records = {k: strip_run(v) for k, v in scan_all("inv-sfn-command").items()}
    local_records = {k: strip_run(v) for k, v in scan_all("inv-local-command").items()}
    assert len(local_records) == 60 - 7  # every 9th listed object is a reject
    assert sfn_records == local_records
    rejected = list(csv.reader(open(tmp / "inv-rejects.csv", encoding="utf-8")))[1:]
    assert len(rejected) == 7 and all("Bad Key" in ",".join(r) for r in rejected)


def test_an_s3_inventory_manifest_naming_a_missing_file_fails_the_map_run(cloud):
    """An inventory file the manifest.json lists is not there: ItemReader fails
    (States.ItemReaderFailed) before any child runs."""
    s3 = cloud["s3"]
    s3.create_bucket(Bucket="inventory")
    key = _inventory(s3, "lake/gone", [_inventory_rows(5)])
    s3.delete_object(Bucket="inventory", Key="lake/gone/data/part-0.csv.gz")
    definition = substituted(
        max_items_per_batch=10, input_type="MANIFEST", manifest_type="S3_INVENTORY"
    )
    desc, log, _writer = run_machine(
        cloud, definition, key, "i-inventory-gone", extra_input={"bucket": "inventory"}
    )
    assert desc["status"] == "FAILED"
    assert desc.get("error") == "States.ItemReaderFailed", desc
    assert "part-0.csv.gz" in desc.get("cause", ""), desc
    assert log.invocations == []

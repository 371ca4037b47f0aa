"""`importer plan`: counts checked against the transform, capacity from DescribeTable."""

from __future__ import annotations

import gzip
import json
import math
import random
import tracemalloc
from pathlib import Path

import pytest

from importer.cli.main import main
from importer.cli.plan import ASL_BATCH_ITEMS, estimate, plan_source, render
from importer.input.batching import AWS_MAX_INPUT_BYTES, DEFAULT_MAX_ITEMS, Batcher
from importer.input.source import CsvReader
from importer.item_size import item_size_of
from importer.run.batch_steps import resolve_duplicates
from importer.run.driver import RunConfig, run_import
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform import reference
from importer.transform.context import RunContext
from importer.transform.spec import header_problem, load_spec
from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer

HEADER = "sku,name,price,qty,active\n"


def make_csv(path: Path, rows: int, seed: int = 3) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i in range(rows):
            if i % 53 == 0:
                fh.write(f"bad sku {i},n,1,1,yes\n")  # pattern reject
            elif i % 71 == 0:
                fh.write(f"SKU-{i - 1},dup of the previous row,1,1,no\n")  # same key twice
            else:
                name = "ñame " * rng.randint(1, 500)  # some items over 1 KB, UTF-8
                fh.write(f"SKU-{i},{name},{rng.randint(0, 99999) / 100},{rng.randint(0, 9)},y\n")
    return path


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(PRODUCT_SPEC)
    return p


def expected_counts(src: Path, spec_path: Path) -> dict:
    """The same numbers the slow way: reference transform, exact sizes, plain loops."""
    spec = load_spec(spec_path)
    ctx = RunContext.new(run_id="0123456789abcdef")  # as long as a real run's id
    with open(src, "rb") as fh:
        reader = CsvReader(fh, spec.csv)
        header = reader.header
        rows = list(reader)
    out = dict(items=0, rejected=0, units=0, bytes=0, requests=0, batches=0)
    local = Batcher(
        max_items=DEFAULT_MAX_ITEMS,
        max_bytes=AWS_MAX_INPUT_BYTES,
        batch_input=ctx.to_batch_input(),
        header=header,
    )
    for batch in local.cut(rows, header):
        out["batches"] += 1
        result = reference.transform_batch(spec, header, batch.rows, ctx)
        items, dupes = resolve_duplicates(
            result.items, code_column=spec.record.code.columns[0], fields=dict(batch.rows)
        )
        out["rejected"] += len(batch.rejects) + len(result.rejects) + len(dupes)
        out["items"] += len(items)
        out["requests"] += math.ceil(len(items) / 25)
        for item in items:
            out["bytes"] += len(item.wire)
            out["units"] += max(1, math.ceil(item_size_of(json.loads(item.wire)) / 1024))
    children = Batcher(
        max_items=ASL_BATCH_ITEMS,
        max_bytes=AWS_MAX_INPUT_BYTES,
        batch_input=ctx.to_batch_input(),
        header=header,
    ).cut(rows, header)
    out["children"] = sum(1 for _ in children)
    out["rows"] = len(rows)
    return out


def test_plan_counts_match_the_transform(tmp_path: Path, spec_path: Path):
    src = make_csv(tmp_path / "p.csv", 3000)
    plan = plan_source(str(src), load_spec(spec_path))
    want = expected_counts(src, spec_path)
    assert plan.rows == want["rows"] == 3000
    assert (plan.items, plan.rejected) == (want["items"], want["rejected"])
    assert plan.rejected > 50  # pattern rejects and duplicate keys
    assert plan.write_units == want["units"] > plan.items  # some items over 1 KB
    assert plan.item_bytes == want["bytes"]
    assert plan.requests == want["requests"]
    assert plan.batches == want["batches"]
    assert plan.map_children == want["children"] == 300
    assert plan.source_bytes == src.stat().st_size


def test_plan_agrees_with_a_validate_run(tmp_path: Path, spec_path: Path):
    src = make_csv(tmp_path / "p.csv", 2000, seed=9)
    spec = load_spec(spec_path)
    settings = PipelineSettings(spec=spec, mode="blind", dry_run=True)
    with open_pipeline(settings) as pipeline:
        summary = run_import(RunConfig(source=str(src)), pipeline=pipeline)
    plan = plan_source(str(src), spec)
    assert (plan.rows, plan.items, plan.rejected, plan.batches) == (
        summary.rows,
        summary.would_write,
        summary.rejected,
        summary.batches,
    )


def test_gzip_source_counts_uncompressed_bytes(tmp_path: Path, spec_path: Path):
    src = make_csv(tmp_path / "p.csv", 500)
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    plan = plan_source(str(gz), load_spec(spec_path))
    assert plan.source_bytes == src.stat().st_size
    assert plan.source_bytes_read == gz.stat().st_size
    assert plan.rows == 500


def run_json(capsys, *argv: str) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_time_and_cost_at_max_wcu(tmp_path: Path, spec_path: Path, capsys):
    src = make_csv(tmp_path / "p.csv", 1000)
    report = run_json(capsys, str(src), "--spec", str(spec_path), "--max-wcu", "250")
    units = report["write_units"]
    assert report["seconds"] == round(units / 250, 1)
    assert report["on_demand"]["cost"] == round(units / 1e6 * 0.625, 4)
    assert report["provisioned"] == {
        "price_per_wcu_hour": 0.00065,
        "wcu": 250,
        "hours_billed": 1,
        "cost": round(250 * 0.00065, 4),
    }
    assert report["import_table"]["cost"] == round(src.stat().st_size / 1e9 * 0.15, 4)
    priced = run_json(capsys, str(src), "--spec", str(spec_path), "--price-per-million-wru", "1.25")
    assert priced["on_demand"]["cost"] == round(units / 1e6 * 1.25, 4)
    assert priced["capacity"]["basis"] == "new on-demand table"


def test_cli_reads_capacity_from_describe_table(tmp_path: Path, spec_path: Path, capsys):
    src = make_csv(tmp_path / "p.csv", 400)
    with DdbServer(tables=["T"], write_capacity=500) as srv:
        argv = (str(src), "--spec", str(spec_path), "--table", "T")
        argv += ("--endpoint-url", srv.endpoint_url, "--region", "us-east-1")
        report = run_json(capsys, *argv)
        assert report["capacity"]["basis"] == "provisioned"
        assert report["capacity"]["provisioned_wcu"] == 500
        assert report["seconds"] == round(report["write_units"] / 500, 1)
        assert "import_table" in report  # the table is empty
        srv.capacity.set(write=None)  # on-demand
        srv.backend.tables["T"].items[("a", "b")] = {"pk": {"S": "a"}, "sk": {"S": "b"}}
        report = run_json(capsys, *argv)
        assert report["capacity"]["basis"] == "on-demand (assumed)"
        assert report["capacity"]["write_units_per_second"] == 4000
        assert "import_table" not in report  # not an empty new table


def test_cli_human_output_and_errors(tmp_path: Path, spec_path: Path, capsys):
    src = make_csv(tmp_path / "p.csv", 300)
    assert main(["plan", str(src), "--spec", str(spec_path), "--max-wcu", "100"]) == 0
    out = capsys.readouterr().out
    for label in ("rows", "batches", "Map children", "write units", "on-demand", "time"):
        assert label in out
    assert main(["plan", str(tmp_path / "missing.csv"), "--spec", str(spec_path)]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(src), "--spec", str(spec_path), "--max-wcu", "0"])
    assert exc.value.code == 2
    assert "--max-wcu: must be a positive number" in capsys.readouterr().err
    assert (
        main(
            [
                "plan",
                str(src),
                "--spec",
                str(spec_path),
                "--table",
                "Nope",
                "--endpoint-url",
                "http://127.0.0.1:9",
                "--region",
                "us-east-1",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(
        "importer: error: cannot reach DynamoDB endpoint http://127.0.0.1:9 (region us-east-1): "
    )
    assert "Traceback" not in err


def test_memory_stays_flat(tmp_path: Path, spec_path: Path):
    spec = load_spec(spec_path)

    def peak(rows: int) -> int:
        src = make_csv(tmp_path / f"m{rows}.csv", rows, seed=1)
        tracemalloc.start()
        plan_source(str(src), spec)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5000), peak(40000)
    assert large < small * 1.5, (small, large)


def test_plan_compares_the_state_machine_with_the_bulk_sync(tmp_path: Path, spec_path: Path):
    src = make_csv(tmp_path / "p.csv", 1000)
    report = estimate(plan_source(str(src), load_spec(spec_path)), None)
    items, units = report["items"], report["write_units"]
    sm, bulk = report["data_table"]["state_machine"], report["data_table"]["bulk_sync"]
    assert sm["executions"] == items and sm["state_transitions"] == 10 * items
    assert bulk["write_units"] == 2 * units
    # $25 per million transitions dwarfs the writes themselves
    assert sm["cost"] > 20 * bulk["cost"] > 0
    assert "run --sync" in render(report)


@pytest.mark.parametrize(
    "spec_text, csv_text",
    [
        (PRODUCT_SPEC, "sku,name,price,qty\nA-1,x,1,1\n"),  # a spec column missing
        (PRODUCT_SPEC.replace('name = "{name}"', 'name = "{nmae}"'), "sku,name,price,qty,active\n"),
    ],
)
def test_plan_refuses_a_header_with_the_rule_run_uses(tmp_path, capsys, spec_text, csv_text):
    """One header rule (`header_problem`, which the driver and the Lambda child call):
    what `run` refuses, `plan` refuses, with the same words."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(spec_text)
    src = tmp_path / "in.csv"
    src.write_text(csv_text)
    capsys.readouterr()
    assert main(["plan", str(src), "--spec", str(spec_path)]) != 0
    said = capsys.readouterr().err.strip().splitlines()[-1]
    header = csv_text.splitlines()[0].split(",")
    expected = header_problem(load_spec(spec_path), header)
    assert expected and said.endswith(expected)


@pytest.mark.parametrize(
    "header",
    [
        "sku,name,price,qty,active",
        "sku,name,price,qty,active,extra",  # read, ignored and said
        "active,qty,price,name,sku",  # any order
        "sku,name,price,qty",  # a spec column missing
        "SKU,name,price,qty,active",  # a column's name is exact
        "sku,sku,name,price,qty,active",  # a name twice
        "sku;name;price;qty;active",  # another delimiter: one column
    ],
)
def test_plan_refuses_exactly_the_headers_run_refuses(tmp_path, capsys, header):
    """`plan` prices what `run` would do: a header `run` refuses, `plan` refuses in the
    same words, and one `run` accepts, `plan` accepts (`validate` is `run` without writes)."""
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    src = tmp_path / "in.csv"
    width = len(header.split(","))
    src.write_text(header + "\n" + ",".join(["A-1", "n", "1", "1", "yes", "x"][:width]) + "\n")

    def refusal(command: str) -> str | None:
        capsys.readouterr()
        code = main([command, str(src), "--spec", str(tmp_path / "spec.toml")])
        errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
        assert (code == 1) == bool(errors), (command, code, errors)
        return errors[-1] if errors else None

    assert refusal("plan") == refusal("validate")

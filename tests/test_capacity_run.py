"""`importer run` against a table of limited capacity and against random faults: every
row stored exactly once, whatever the table pushes back.

How fast it goes there (capacity used, throttled share, fault cost) is measured in
benchmarks/bench_capacity_run.py: a clock on real sockets is a benchmark's business.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer

CMD = "cap-app-master-command"


def write_csv(path: Path, n: int) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "name", "price", "qty", "active"])
        for i in range(n):
            out.writerow([f"P-{i:06d}", f"item {i}", f"{i % 97}.5", str(i % 13), "yes"])
    return path


@pytest.fixture
def spec(write_file) -> Path:
    return write_file("spec.toml", PRODUCT_SPEC)


def test_a_capacity_limited_table_stores_every_row_once(run_cli, spec, tmp_path):
    src = write_csv(tmp_path / "in.csv", 3000)
    with DdbServer(tables=[CMD], write_capacity=1500, capacity_burst=0.5) as srv:
        res = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url, mode="blind")
        assert res.code == 0, res.stderr
        assert res.summary["written"] == 3000 and len(srv.items(CMD)) == 3000
        assert (
            srv.stats().get("capacity.unprocessed.write", 0)
            + srv.stats().get("capacity.throttled.write", 0)
            > 0
        )  # the table did push back


def test_a_budget_is_never_throttled(run_cli, spec, tmp_path):
    src = write_csv(tmp_path / "in.csv", 2000)
    with DdbServer(tables=[CMD], write_capacity=2000, capacity_burst=0.5) as srv:
        res = run_cli(
            "run",
            src,
            spec=spec,
            table=CMD,
            endpoint_url=srv.endpoint_url,
            mode="blind",
            max_wcu=1000,
        )
        assert res.code == 0, res.stderr
        assert len(srv.items(CMD)) == 2000
        stats = srv.stats()
        assert "capacity.unprocessed.write" not in stats
        assert "capacity.throttled.write" not in stats


def test_random_faults_lose_and_double_nothing(run_cli, spec, tmp_path):
    """Throttles, partial answers, 500s and dropped connections at random."""
    src = write_csv(tmp_path / "in.csv", 10000)
    with DdbServer(tables=[CMD]) as srv:
        srv.faults.set(
            seed=42,
            throttle=0.2,
            unprocessed=0.2,
            server_error=0.05,
            drop_before=0.01,
            drop_after=0.01,
            ops={"BatchWriteItem"},
        )
        res = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url)
        assert res.code == 0, res.stderr
        assert res.summary["written"] == 10000 and len(srv.items(CMD)) == 10000
        assert res.summary["retries"] > 0

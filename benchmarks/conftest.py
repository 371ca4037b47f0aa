"""Shared benchmark setup.

* `bench_*.py` files are collected by `pytest benchmarks/` (pytest's default
  pattern only picks up `test_*.py`).
* The loopback servers are the tests' own doubles, imported one way
  (`tests.support.ddb_server.SubprocessDdbServer`, `tests.support.ack_endpoint`).
* Client speed is measured against `ack_endpoint.AckEndpoint` (the compiled
  ack_server.c: acknowledges, stores nothing, costs the client nothing), not
  the Python loopback server: bench_side_by_side.py, bench_memory.py.
* `IMPORTER_BENCH_SMOKE=1` -> `smoke` is True: tiny inputs, run don't time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the suite's own fixtures (one definition): `run_cli` runs a command in-process
from tests.conftest import run_cli, write_file  # noqa: F401

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"


def pytest_collect_file(file_path: Path, parent):
    # a file named on the command line is already collected by pytest's python plugin
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def smoke() -> bool:
    return SMOKE


@pytest.fixture(scope="session")
def ack_binary() -> Path:
    """The compiled acknowledging endpoint (tests/support/ack_server.c), built once per session."""
    from tests.support.ack_endpoint import AckServerUnavailable, build_ack_server

    try:
        return build_ack_server()
    except AckServerUnavailable as exc:
        pytest.skip(str(exc))

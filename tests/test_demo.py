"""`importer demo`: the whole product on the embedded stand-in, down to a data row's history."""

from __future__ import annotations

import json
import os

import pytest

from importer.cli.main import main

pytest.importorskip("moto.server")


@pytest.fixture
def restored_environment():
    """The demo sets AWS_* for its stand-in in the process environment; later tests must not
    see an endpoint that is gone."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_demo_imports_with_sync_and_shows_a_data_record_and_its_history(
    tmp_path, capsys, restored_environment
):
    assert main(["demo", "--rows", "600", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    first = json.loads((tmp_path / "products.summary.json").read_text())
    update = json.loads((tmp_path / "price-update.summary.json").read_text())
    assert (first["rows"], first["written"], first["rejected"], first["synced"]) == (
        600,
        599,
        1,
        599,
    )
    assert (update["written"], update["synced"]) == (3, 3)
    assert "status      finish:FINISHED" in out and "syncMode    SYNC" in out
    data = out.split("data record ", 1)[1]
    assert "version     2" in data and "(new price)" in data
    history = out.split("its history ", 1)[1]
    assert history.startswith("PRODUCT#SKU-0000000@1") and "version     1" in history

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
    data = out.split("data record ", 1)[1].split("its history", 1)[0]
    history_part = out.split("its history ", 1)[1]
    assert "version     2" in data and "new price, rest kept" in data
    # the price file named three columns: the name, stock, tags... of version 1 are kept
    assert "'stock':" in data and "'tags':" in data and "deluxe" in data
    assert "'stock':" in history_part
    assert "ttl         " in data and "ttl         None" not in data
    history = out.split("its history ", 1)[1]
    assert history.startswith("PRODUCT#SKU-0000000@1") and "version     1" in history


def test_the_echoed_commands_run_as_printed(tmp_path, capsys, restored_environment):
    """Each `$ importer ...` line, typed again in the demo's folder against a stand-in
    holding what the demo's had, runs: nothing left out (issue 29)."""
    import shlex

    import boto3

    from importer.cli.demo import DEMO_BUCKET, DEMO_PREFIX
    from importer.cli.local_moto import environment, stand_in

    assert main(["demo", "--rows", "600", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    echoed = [line[2:].split("  #")[0] for line in out.splitlines() if line.startswith("$ ")]
    assert len(echoed) == 2 and all(c.startswith("importer run ") for c in echoed)
    assert f"the commands below run in {tmp_path}" in out
    here = os.getcwd()
    # a fresh stand-in as `importer local up --prefix demo-app-master --bucket importer-demo`
    # makes it, with the environment `importer local env` prints
    with stand_in(prefix=DEMO_PREFIX, bucket=DEMO_BUCKET, in_process=True) as up:
        os.environ.update(environment(up.endpoint, up.region))
        s3 = boto3.client("s3", endpoint_url=up.endpoint)
        s3.upload_file(str(tmp_path / "products.csv"), DEMO_BUCKET, "incoming/products.csv")
        os.chdir(tmp_path)
        try:
            codes = [main(shlex.split(command)[1:]) for command in echoed]
        finally:
            os.chdir(here)
    assert codes == [3, 0]  # the deliberately bad row; then the price update
    update = json.loads((tmp_path / "price-update.summary.json").read_text())
    assert (update["written"], update["synced"]) == (3, 3)

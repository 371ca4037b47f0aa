"""Import modes through `importer run` (the modes themselves: tests/test_modes.py)."""

from __future__ import annotations

import json

from importer.cli.main import main
from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer

HEADER = "sku,name,price,qty,active\n"


def write_csv(path, rows):
    path.write_text(HEADER + "".join(f"{s},{n},{p},1,yes\n" for s, n, p in rows))


def run(tmp_path, srv, src, *extra):
    out = tmp_path / "s.json"
    code = main(
        [
            "run",
            str(src),
            "--spec",
            str(tmp_path / "spec.toml"),
            "--table",
            "shop-command",
            "--endpoint-url",
            srv.endpoint_url,
            "--quiet",
            "--summary-json",
            str(out),
            "--rejects",
            str(tmp_path / "r.csv"),
            *extra,
        ]
    )
    data = json.loads(out.read_text())
    assert data["rows"] == data["written"] + data["unchanged"] + data["rejected"] + data["failed"]
    return code, data


def test_insert_then_upsert_keeps_history_and_counts_unchanged(tmp_path):
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    first = [(f"S-{i}", f"Name {i}", f"{i}.5") for i in range(50)]
    write_csv(tmp_path / "a.csv", first)
    with DdbServer(tables=["shop-command", "shop-data"]) as srv:
        code, data = run(tmp_path, srv, tmp_path / "a.csv", "--batch-items", "7")
        assert code == 0 and data["written"] == 50
        v1 = {k: v for k, v in srv.items("shop-command").items()}
        second = [(s, n + (" v2" if i % 10 == 0 else ""), p) for i, (s, n, p) in enumerate(first)]
        second += [("NEW-1", "New", "1"), ("NEW-1", "New again", "2")]
        write_csv(tmp_path / "b.csv", second)
        # insert (default): existing entities are reported, not overwritten
        code, data = run(tmp_path, srv, tmp_path / "b.csv")
        assert code == 3
        assert (data["written"], data["rejected"]) == (1, 51)
        assert "exists (version 1)" in (tmp_path / "r.csv").read_text()
        # upsert: changed rows get version 2, equal rows are unchanged, NEW-1 gets v2 too
        code, data = run(tmp_path, srv, tmp_path / "b.csv", "--mode", "upsert")
        assert code == 0
        assert (data["written"], data["unchanged"]) == (5 + 1, 46)
        items = srv.items("shop-command")
    for key, item in v1.items():
        assert items[key] == item  # version 1 history untouched
    for i in range(0, 50, 10):
        v2 = items[("PRODUCT#acme", f"PRODUCT#S-{i}@2")]
        assert v2["version"] == {"N": "2"}
        assert v2["attributes"]["M"]["name"] == {"S": f"Name {i} v2"}
    assert items[("PRODUCT#acme", "PRODUCT#NEW-1@2")]["attributes"]["M"]["name"] == {
        "S": "New again"
    }
    assert ("PRODUCT#acme", "PRODUCT#S-1@2") not in items


def test_upsert_without_data_table_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    write_csv(tmp_path / "a.csv", [("S-1", "n", "1")])
    with DdbServer(tables=["shop-command"]) as srv:
        code = main(
            [
                "run",
                str(tmp_path / "a.csv"),
                "--spec",
                str(tmp_path / "spec.toml"),
                "--table",
                "shop-command",
                "--endpoint-url",
                srv.endpoint_url,
                "--mode",
                "upsert",
                "--quiet",
            ]
        )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "data table" in err

"""A header given instead of read -- the spec's CSVHeaders, an S3 Inventory's fileSchema,
`--csv-headers` of `importer asl`/`template` -- is held to ItemReader's 10 KiB header
limit, with the words a too-long header row in a file is refused with."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from importer.input.options import MAX_HEADER_BYTES, header_row_problem

WORDS = (
    "header row longer than 10,240 bytes: Step Functions' ItemReader reads CSV headers of up "
    "to 10 KiB"
)


def _names(total: int) -> list[str]:
    """Column names whose header row (comma-joined) is `total` bytes, `sku` and `name` first."""
    names = ["sku", "name"]
    size = len("sku,name")
    while size < total:
        take = min(50, total - size - 1)
        if take < 1:
            names[-1] += "x" * (total - size)
            break
        names.append(f"c{len(names)}".ljust(take, "y")[:take])
        size += 1 + take
    assert len(",".join(names).encode()) == total
    return names


def _spec(tmp_path: Path, names: list[str]) -> Path:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "record": {"type": "PRODUCT", "code": "{sku}", "name": "{name}"},
                "columns": {"sku": {"required": True}, "name": {}},
                "csv": {"header": "GIVEN", "headers": names},
            }
        )
    )
    return spec


def test_the_row_a_given_header_makes_is_what_is_measured():
    assert header_row_problem(_names(MAX_HEADER_BYTES)) is None
    assert header_row_problem(_names(MAX_HEADER_BYTES + 1)) == WORDS
    # a name CSV must quote counts with its quotes (and a quote inside twice)
    base = _names(MAX_HEADER_BYTES - 4)
    assert header_row_problem([*base[:-1], base[-1] + ',"']) == WORDS
    assert header_row_problem(["é" * 5121]) == WORDS  # UTF-8 bytes, not characters


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_csv_headers_over_10_kib_stop_every_command_in_one_line(tmp_path, capsys, command):
    from importer.cli.main import main

    source = tmp_path / "in.csv"
    source.write_text("A,a\n")
    ok = _spec(tmp_path, _names(MAX_HEADER_BYTES))
    args = [command, str(source), "--spec", str(ok)]
    if command == "run":
        args += ["--table", "t", "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"]
    main(args)
    assert WORDS not in capsys.readouterr().err
    too_long = _spec(tmp_path, _names(MAX_HEADER_BYTES + 1))
    args[args.index(str(ok))] = str(too_long)
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].endswith(f"csv.headers: {WORDS}"), err


@pytest.mark.parametrize("command", ["asl", "template"])
def test_csv_headers_flag_over_10_kib_is_refused_by_asl_and_template(tmp_path, capsys, command):
    from importer.cli.main import main

    out = tmp_path / "out.json"
    base = [command, "--input-type", "CSV", "--out", str(out), "--csv-headers"]
    assert main([*base, ",".join(_names(MAX_HEADER_BYTES))]) == 0
    capsys.readouterr()
    assert main([*base, ",".join(_names(MAX_HEADER_BYTES + 1))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"importer {command}: CSVHeaders: {WORDS}"]


def test_an_inventory_file_schema_over_10_kib_stops_in_one_line(tmp_path, capsys):
    import boto3
    from moto import mock_aws

    from importer.input.source import SourceError
    from importer.run.driver import RunConfig, run_import
    from importer.run.pipeline import PipelineSettings, open_pipeline
    from importer.transform.spec import parse_spec

    spec = parse_spec(
        {
            "record": {"type": "OBJ", "code": "{Key}"},
            "columns": {"Key": {"required": True}},
            "input": {"manifest_type": "S3_INVENTORY"},
        }
    )
    for total, fails in ((MAX_HEADER_BYTES, False), (MAX_HEADER_BYTES + 1, True)):
        names = ["Bucket", "Key", "P" * (total - len("Bucket,Key,"))]
        assert len(",".join(names)) == total
        schema = ", ".join(names)  # the fileSchema's spaces are not the header's
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="inv")
            s3.put_object(Bucket="inv", Key="d/0.csv.gz", Body=gzip.compress(b'"b","k"\n'))
            doc = {
                "destinationBucket": "arn:aws:s3:::inv",
                "fileFormat": "CSV",
                "fileSchema": schema,
                "files": [{"key": "d/0.csv.gz"}],
            }
            s3.put_object(Bucket="inv", Key="m/manifest.json", Body=json.dumps(doc).encode())
            settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=1)
            with open_pipeline(settings) as pipeline:
                cfg = RunConfig(source="s3://inv/m/manifest.json")
                if fails:
                    with pytest.raises(SourceError) as caught:
                        run_import(cfg, pipeline=pipeline, s3_client=s3)
                    assert str(caught.value) == (
                        f"s3://inv/m/manifest.json: inventory fileSchema: {WORDS}"
                    )
                else:
                    assert run_import(cfg, pipeline=pipeline, s3_client=s3).rows == 1

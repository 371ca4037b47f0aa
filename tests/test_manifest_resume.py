"""`--resume` of a manifest run skips the objects it finished, without reading them again.

A manifest run records in its checkpoint, for each object read to its end, where
the batch cut stood when the object began and ended; a resume opens no object
whose batches were all finished (moto S3 counts the GETs), stands where the cut
was, and ends with the same table, rejects and counts as a run never stopped --
after a fatal writer error and after a Ctrl-C (SIGINT raised once the writer has
written n batches: events, not time).  A checkpoint written before these records
still resumes, reading every object again.
"""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from importer.cli.bench import BENCH_SPEC, generate_csv
from importer.dynamodb.errors import WriterFatalError
from importer.run.driver import RunConfig, RunInterrupted, run_import
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform.context import RunContext
from importer.transform.spec import parse_spec
from tests.support.ddb_server import DdbServer
from tests.support.formats_data import jsonl_lines

CTX = RunContext(run_id="mf", timestamp="2024-01-01T00:00:00+00:00", source="import-csv:mf")
SESSION = boto3.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)
INVENTORY_SPEC = {
    "record": {"type": "OBJ", "code": "{Key}"},
    "columns": {"Key": {"required": True}, "Size": {"type": "integer"}},
    "input": {"manifest_type": "S3_INVENTORY"},
}


class _StopAfter:
    """Writes `n` batches through `inner`, then stops the run: a fatal error, or a Ctrl-C
    (SIGINT to this process: the batches in flight finish and are checkpointed)."""

    def __init__(self, inner: Any, n: int, how: str) -> None:
        self.inner, self.n, self.how = inner, n, how

    def write_batch(self, items):
        if self.n <= 0:
            if self.how == "fatal":
                raise WriterFatalError("credentials expired")
            if self.n == 0:
                signal.raise_signal(signal.SIGINT)
            self.n -= 1
        else:
            self.n -= 1
        return self.inner.write_batch(items)

    def close(self) -> None:
        self.inner.close()


def _gets(s3: Any) -> list[str]:
    """The keys of every GetObject `s3` sends from now on."""
    keys: list[str] = []
    s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: keys.append(params["Key"])
    )
    return keys


def _run(spec: Any, source: str, s3: Any, srv: DdbServer, tmp: Path, **kw: Any) -> dict:
    stop = kw.pop("stop", None)
    settings = PipelineSettings(
        spec=spec,
        table="t-command",
        mode="blind",
        endpoint_url=srv.endpoint_url,
        workers=1,
        region="us-east-1",
        session=SESSION,
        check_table=False,
    )
    with open_pipeline(settings) as pipeline:
        if stop is not None:
            pipeline.writer = _StopAfter(pipeline.writer, *stop)
        cfg = RunConfig(
            source=source,
            batch_items=100,
            checkpoint_path=tmp / "cp.jsonl",
            rejects_path=tmp / "r.csv",
            **kw,
        )
        with mock.patch.object(RunContext, "new", return_value=CTX):
            return run_import(cfg, pipeline=pipeline, s3_client=s3).to_json()


_SAME = ("rows", "written", "rejected", "failed", "skipped", "batches", "objects", "objects_read")


def _outcome(summary: dict, srv: DdbServer, tmp: Path) -> tuple:
    return (
        {k: summary[k] for k in _SAME},
        srv.items("t-command"),
        (tmp / "r.csv").read_text(),
    )


def _inventory(s3: Any) -> str:
    """Three gzip CSV files of 250, 450 and 200 objects (one bad Size in the first and
    the last): object 0's rows end inside batch 2, which object 1 goes on filling."""
    s3.create_bucket(Bucket="inv")
    keys, first = [], 0
    for n, count in enumerate((250, 450, 200)):
        rows = "".join(
            f'"src","obj-{i:05d}","{"x" if i in (7, 820) else i}"\n'
            for i in range(first, first + count)
        )
        first += count
        keys.append(f"data/{n}.csv.gz")
        s3.put_object(Bucket="inv", Key=keys[-1], Body=gzip.compress(rows.encode()))
    doc = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": k, "size": 1, "MD5checksum": "x"} for k in keys],
    }
    s3.put_object(Bucket="inv", Key="m/manifest.json", Body=json.dumps(doc).encode())
    return "s3://inv/m/manifest.json"


def _athena(s3: Any) -> str:
    """An Athena UNLOAD of the benchmark products as three JSONL objects."""
    kinds = {rule.name: rule.type for rule in parse_spec(BENCH_SPEC).columns}
    lines = jsonl_lines(generate_csv(900), kinds)[:900]
    s3.create_bucket(Bucket="ath")
    uris = []
    for n, chunk in enumerate((lines[:250], lines[250:700], lines[700:])):
        s3.put_object(Bucket="ath", Key=f"out/{n}.jsonl", Body="\n".join(chunk).encode())
        uris.append(f"s3://ath/out/{n}.jsonl")
    s3.put_object(Bucket="ath", Key="q-manifest.csv", Body="".join(u + "\n" for u in uris).encode())
    return "s3://ath/q-manifest.csv"


def _finished(tmp: Path) -> set[int]:
    lines = [json.loads(x) for x in (tmp / "cp.jsonl").read_text().splitlines()[1:]]
    return {rec["batch"] for rec in lines if "batch" in rec}


@pytest.mark.parametrize("how", ["fatal", "ctrl-c"])
@pytest.mark.parametrize("kind", ["S3_INVENTORY", "ATHENA_DATA"])
def test_a_resumed_manifest_run_skips_finished_objects_and_ends_as_one_run(tmp_path, kind, how):
    spec = parse_spec(
        INVENTORY_SPEC if kind == "S3_INVENTORY" else dict(BENCH_SPEC, input={"data_type": "JSONL"})
    )
    first_object = "data/0.csv.gz" if kind == "S3_INVENTORY" else "out/0.jsonl"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        uri = _inventory(s3) if kind == "S3_INVENTORY" else _athena(s3)
        whole, stopped = tmp_path / "whole", tmp_path / "stopped"
        whole.mkdir(), stopped.mkdir()
        with DdbServer(tables=["t-command"]) as srv:
            want = _outcome(_run(spec, uri, s3, srv, whole), srv, whole)
        with DdbServer(tables=["t-command"]) as srv:
            if how == "fatal":
                with pytest.raises(WriterFatalError, match="finished batch"):
                    _run(spec, uri, s3, srv, stopped, stop=(4, how))
            else:
                with pytest.raises(RunInterrupted):
                    _run(spec, uri, s3, srv, stopped, stop=(4, how))
            assert {0, 1, 2} <= _finished(stopped)  # object 0's batches: it is done
            assert 0 < len(srv.items("t-command")) < 900
            gets = _gets(s3)
            summary = _run(spec, uri, s3, srv, stopped, resume=True)
            got = _outcome(summary, srv, stopped)
    assert first_object not in gets  # the finished object was not read again
    assert len({g for g in gets if g != first_object and "manifest" not in g}) == 2
    assert summary["resumed_batches"] >= 4
    assert got == want  # the same table, rejects and counts as the run never stopped
    assert want[0]["rejected"] > 0


def test_a_checkpoint_without_object_records_resumes_reading_every_object(tmp_path):
    """A checkpoint from before the object records: every object is read again (GETs), and
    the run ends as one run would."""
    spec = parse_spec(INVENTORY_SPEC)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        uri = _inventory(s3)
        whole, stopped = tmp_path / "whole", tmp_path / "stopped"
        whole.mkdir(), stopped.mkdir()
        with DdbServer(tables=["t-command"]) as srv:
            want = _outcome(_run(spec, uri, s3, srv, whole), srv, whole)
        with DdbServer(tables=["t-command"]) as srv:
            with pytest.raises(WriterFatalError):
                _run(spec, uri, s3, srv, stopped, stop=(4, "fatal"))
            cp = stopped / "cp.jsonl"
            old = [x for x in cp.read_text().splitlines() if '"object"' not in x]
            cp.write_text("\n".join(old) + "\n")
            gets = _gets(s3)
            summary = _run(spec, uri, s3, srv, stopped, resume=True)
            got = _outcome(summary, srv, stopped)
    assert "data/0.csv.gz" in gets
    assert got == want


def test_an_object_record_that_is_damaged_is_one_line(tmp_path):
    from importer.run.checkpoint import Checkpoint, CheckpointError

    cp = tmp_path / "cp.jsonl"
    cp.write_text(json.dumps({"run": {"run_id": "r"}}) + '\n{"object": 0, "uri": 3}\n')
    with pytest.raises(CheckpointError, match="damaged at line 2"):
        Checkpoint.load(cp)

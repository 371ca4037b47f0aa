"""The MBC import module's job records (`{prefix}import_tmp`), as a multi-file job writes them.

What the framework writes (`import/src/import.service.ts`, snapshot 8fa5b4c):

* a multi-file job is its ZIP job: ``pk = "ZIP_IMPORT#{tenant}"``,
  ``sk = "ZIP#{ulid}"``, ``type = "ZIP_MASTER_JOB"``, ``attributes`` the request
  (bucket, key, tenantCode, tableName, ``sortedFileKeys``) -- ``createZipJob``;
* one child per file, as ``createCsvJobWithTaskToken`` puts it:
  ``pk = "CSV_IMPORT#{tenant}"``, ``sk = "{tableName}#{ulid}"``,
  ``type = "CSV_MASTER_JOB"``, ``source = "{zip pk}#{zip sk}"`` (the link back);
* every record: ``id = "{pk}#{sk}"``, ``code = ulid``, ``version 0``,
  ``tenantCode``, ``name``, ``status``, ``requestId``, ``createdAt/updatedAt``,
  ``createdBy/updatedBy``;
* ``updateStatus``: ``SET status, attributes?, result``; the counters of
  ``incrementParentJobCounters``: ``totalRows``, ``processedRows``,
  ``succeededRows``, ``failedRows``; a CSV job's final ``result`` is
  ``{message, total, succeeded, failed}`` (``finalize_parent_job``), the ZIP
  job's ``{totalRows, processedRows, failedRows, csvTaskFailureCount}``
  (``zip-import.sfn.event.handler.ts`` ``finalizeZipMasterJob``).

Statuses (``enum/import-status.enum.ts``): CREATED, QUEUED, PROCESSING,
COMPLETED, FAILED.  Where we differ, on purpose (README, "Several files, one
job"): a CSV job is COMPLETED only when none of its rows needs a look (bad
data, duplicates, conflicts, failed writes), and the job only when every file
is COMPLETED; the framework's task aggregation calls a job COMPLETED once all
its parts ended, failed or not, which hides a failed file from a screen that
shows only the job's status.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from importer.counts import Counts
from importer.mbc.model import Tables

__all__ = [
    "ImportJobRecorder",
    "file_outcome",
    "import_job_table",
    "iso_time",
    "new_ulid",
    "open_recorder",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SER = TypeSerializer()
_DES = TypeDeserializer()

#: how often a running file's counters are written (seconds of the injected clock)
PROGRESS_EVERY = 2.0


def new_ulid(now: float | None = None, rand: Callable[[int], int] | None = None) -> str:
    """A ULID (48-bit milliseconds, 80 random bits, Crockford base32), as `ulid()` makes."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | (rand or secrets.randbits)(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def iso_time(now: float) -> str:
    """`YYYY-MM-DDTHH:MM:SS+00:00`: the framework's dates (offset, no milliseconds)."""
    return datetime.fromtimestamp(int(now), UTC).isoformat()


def import_job_table(command_table: str) -> str:
    """`{prefix}import_tmp` of the command table's module (as `getTableName('import_tmp')`)."""
    return f"{Tables.from_command_table(command_table).prefix}import_tmp"


def to_item(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _SER.serialize(v) for k, v in value.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _DES.deserialize(v) for k, v in item.items()}


def _tenant(spec_tenant: str | None) -> str:
    if spec_tenant and "{" not in spec_tenant:
        return spec_tenant
    return "single"


class ImportJobRecorder:
    """A job observer (`importer.run.job.JobObserver`) keeping the import_tmp records current.

    Writes go through a boto3 DynamoDB client: a handful of calls per file, not
    the import's hot path.  `now` and `monotonic` are injected so tests need no
    wall clock.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        tenant: str = "single",
        user: str = "importer",
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.table = table
        self.tenant = tenant
        self.user = user
        self.now = now
        self.monotonic = monotonic
        self._last_progress: float | None = None

    # ------------------------------------------------------------------ writes
    def _put(self, item: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.table, Item=to_item(item))

    def _update(self, key: dict[str, str], values: dict[str, Any]) -> None:
        values = {**values, "updatedAt": iso_time(self.now()), "updatedBy": self.user}
        names = {f"#{k}": k for k in values}
        self.client.update_item(
            TableName=self.table,
            Key=to_item(key),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{k}": _SER.serialize(v) for k, v in values.items()},
        )

    def _base(self, pk: str, sk: str, code: str, **fields: Any) -> dict[str, Any]:
        stamp = iso_time(self.now())
        return {
            "pk": pk,
            "sk": sk,
            "id": f"{pk}#{sk}",
            "code": code,
            "version": 0,
            "tenantCode": self.tenant,
            "status": "CREATED",
            "createdAt": stamp,
            "updatedAt": stamp,
            "createdBy": self.user,
            "updatedBy": self.user,
            **fields,
        }

    # --------------------------------------------------------------- observer
    def job_started(self, job: Any) -> None:
        if not job.record:
            code = new_ulid(self.now())
            pk, sk = f"ZIP_IMPORT#{self.tenant}", f"ZIP#{code}"
            zipped = [s for s in job.sources if s.lower().endswith(".zip")]
            label = (
                zipped[0].rsplit("/", 1)[-1]
                if len(job.sources) == 1 and zipped
                else f"{len(job.files)} files"
            )
            self._put(
                self._base(
                    pk,
                    sk,
                    code,
                    type="ZIP_MASTER_JOB",
                    name=f"ZIP Import: {label}",
                    requestId=job.run_id,
                    attributes={
                        "key": job.sources[0] if len(job.sources) == 1 else None,
                        "sources": list(job.sources),
                        "tenantCode": self.tenant,
                        "sortedFileKeys": [f.name for f in job.files],
                    },
                    totalRows=0,
                    processedRows=0,
                    succeededRows=0,
                    failedRows=0,
                )
            )
            job.record = {"pk": pk, "sk": sk}
            for f in job.files:
                child = new_ulid(self.now())
                module = Tables.from_command_table(f.table).module
                cpk, csk = f"CSV_IMPORT#{self.tenant}", f"{module}#{child}"
                self._put(
                    self._base(
                        cpk,
                        csk,
                        child,
                        type="CSV_MASTER_JOB",
                        name=f"CSV Import (from ZIP): {f.name.rsplit('/', 1)[-1]}",
                        source=f"{pk}#{sk}",
                        requestId=f.run_id,
                        attributes={
                            "processingMode": "DIRECT",
                            "key": f.name,
                            "tenantCode": self.tenant,
                            "tableName": module,
                            "table": f.table,
                        },
                    )
                )
                f.record = {"pk": cpk, "sk": csk}
            job.save()
            self._update(job.record, {"status": "QUEUED"})
            for f in job.files:
                self._update(f.record, {"status": "QUEUED"})
        self._update(job.record, {"status": "PROCESSING"})

    def file_started(self, job: Any, f: Any) -> None:
        self._last_progress = self.monotonic()
        if f.record:
            self._update(f.record, {"status": "PROCESSING"})

    def file_progress(self, job: Any, f: Any, rows: int) -> None:
        now = self.monotonic()
        if not f.record or (
            self._last_progress is not None and now - self._last_progress < PROGRESS_EVERY
        ):
            return
        self._last_progress = now
        self._update(f.record, {"processedRows": rows})

    def file_finished(self, job: Any, f: Any) -> None:
        if not f.record:
            return
        s = f.summary or {}
        file_counts = Counts.from_json(s)
        total, succeeded = file_counts.rows, file_counts.succeeded
        counts = {
            "totalRows": total,
            "processedRows": total,
            "succeededRows": succeeded,
            "failedRows": total - succeeded,
        }
        if f.status == "interrupted":
            self._update(f.record, {"processedRows": total})
        else:
            status = file_outcome(s) if f.status == "finished" else "FAILED"
            message = f.error or (
                "All rows were processed." if status == "COMPLETED" else "Some rows need a look."
            )
            result = {
                "message": message,
                "total": total,
                "succeeded": succeeded,
                "failed": total - succeeded,
                "rejectsFile": s.get("rejects_file"),
                "failuresFile": s.get("failures_file"),
            }
            self._update(f.record, {"status": status, **counts, "result": result})
        totals = _job_counts(job)
        self._update(job.record, totals)

    def job_finished(self, job: Any) -> None:
        if not job.record:
            return
        totals = _job_counts(job)
        failures = sum(
            1 for f in job.files if f.status != "finished" or file_outcome(f.summary) == "FAILED"
        )
        self._update(
            job.record,
            {
                "status": "FAILED" if failures else "COMPLETED",
                **totals,
                "result": {
                    "totalRows": totals["totalRows"],
                    "processedRows": totals["succeededRows"],
                    "failedRows": totals["failedRows"],
                    "csvTaskFailureCount": failures,
                },
            },
        )


def file_outcome(summary: dict[str, Any] | None) -> str:
    """COMPLETED when nothing of the file needs a look, else FAILED (the import-job status).

    The rule of the exit codes: rows that exist already are what a re-run
    meets, not a failure; bad data, duplicates, conflicts and failed writes are.
    """
    if not summary or summary.get("status") != "finished" or summary.get("aborted"):
        return "FAILED"
    return "FAILED" if Counts.from_json(summary).needs_look else "COMPLETED"


def _job_counts(job: Any) -> dict[str, int]:
    counts = Counts.total(Counts.from_json(f.summary) for f in job.files)
    total, succeeded = counts.rows, counts.succeeded
    return {
        "totalRows": total,
        "processedRows": total,
        "succeededRows": succeeded,
        "failedRows": total - succeeded,
    }


def open_recorder(
    command_table: str,
    *,
    tenant_template: str | None,
    table: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    client: Any = None,
) -> tuple[ImportJobRecorder | None, str]:
    """The recorder when the import-job table exists, else None; and a line saying which.

    `table` "" turns the record off; None looks for `{prefix}import_tmp`.
    """
    if table == "":
        return None, "import-job record: off (--job-table '')"
    name = table or import_job_table(command_table)
    if client is None:
        import boto3

        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint)
    try:
        client.describe_table(TableName=name)
    except Exception as exc:  # noqa: BLE001 - botocore's ClientError and its kin
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code == "ResourceNotFoundException" and table is None:
            return None, f"import-job record: off (no table {name})"
        raise ValueError(f"import-job table {name}: {exc}") from None
    return ImportJobRecorder(client, name, tenant=_tenant(tenant_template)), (
        f"import-job record: {name}"
    )

"""The MBC task module's records (`{prefix}tasks`), as its TaskService writes them.

Source: `packages/task/src` of mbc-cqrs-serverless (snapshot 8fa5b4c):

* ``task.service.ts`` ``createStepFunctionTask``: ``pk = "SFN_TASK#{tenant}"``,
  ``sk = "{taskType}#{ulid}"``, ``id = "{pk}#{sk}"``, ``code = ulid``,
  ``version 0``, ``type = taskType``, ``name = name or taskType``, ``input``,
  ``status CREATED`` and the audit fields;
* ``createSubTask``: one per element of the parent's ``input``:
  ``sk = "{parentSk}#{index}"``, a new ulid ``code``, ``input`` the element,
  the rest copied from the parent;
* ``updateStepFunctionTask`` / ``updateStatus`` / ``updateSubTaskStatus``:
  UpdateItem ``SET status, attributes`` (each left out when undefined) and an
  SNS notification ``{action, pk, sk, table, id, tenantCode, content: {status,
  attributes}}`` with ``action`` ``task-status`` or ``sub-task-status``;
* ``getAllSubTask`` + ``formatTaskStatus`` (``sub-task.queue.event.handler.ts``):
  the parent's sk is the sub-task's minus its last ``#`` segment; its
  sub-tasks are queried with ``begins_with(sk, parentSk + "#")``; counted:
  ``subTaskCount``, ``subTaskSucceedCount`` (COMPLETED), ``subTaskFailedCount``
  (FAILED), ``subTaskRunningCount`` (PROCESSING), ``subTasks [{pk, sk,
  status}]``; the parent is COMPLETED when succeeded + failed == count, else
  PROCESSING;
* ``task.queue.event.handler.ts`` ``handleStepFunctionTask``: the execution
  name is ``{pk}-{sk}`` with ``#`` → ``-``, the first ``@`` → ``-v``, any other
  run of characters outside ``[0-9A-Za-z_-]`` → ``__xy__``, then ``-{ms}``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from importer.mbc.import_job import from_item, iso_time, new_ulid, to_item

__all__ = [
    "TaskStore",
    "execution_name",
    "format_task_status",
    "parent_key",
]

CREATED, QUEUED, PROCESSING, COMPLETED, FAILED = (
    "CREATED",
    "QUEUED",
    "PROCESSING",
    "COMPLETED",
    "FAILED",
)
#: A notification: (message) -> None; SNS publish, an SQS send, or a test's list.append.
Notify = Callable[[dict[str, Any]], None]
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")


def parent_key(sub: dict[str, str]) -> dict[str, str]:
    return {"pk": sub["pk"], "sk": sub["sk"].rsplit("#", 1)[0]}


def execution_name(pk: str, sk: str, ms: int, rand: Callable[[], str] | None = None) -> str:
    """`handleStepFunctionTask`'s StartExecution name for the task `{pk, sk}`."""
    text = f"{pk or 'pk'}-{sk or 'sk'}".replace("#", "-").replace("@", "-v", 1)
    pick = rand or (
        lambda: "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(2))
    )
    return f"{_UNSAFE.sub(lambda _m: f'__{pick()}__', text)}-{ms}"


def format_task_status(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """`TaskService.formatTaskStatus`: the parent's counters from its sub-tasks."""

    def count(status: str) -> int:
        return sum(1 for t in tasks if t.get("status") == status)

    return {
        "subTaskCount": len(tasks),
        "subTaskSucceedCount": count(COMPLETED),
        "subTaskFailedCount": count(FAILED),
        "subTaskRunningCount": count(PROCESSING),
        "subTasks": [{"pk": t["pk"], "sk": t["sk"], "status": t.get("status")} for t in tasks],
    }


class TaskStore:
    """The tasks table through a boto3 DynamoDB client, with the framework's notifications."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        notify: Notify | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.table = table
        self.notify = notify or (lambda _message: None)
        self.now = now

    # -------------------------------------------------------------- records
    def get(self, key: dict[str, str]) -> dict[str, Any] | None:
        got = self.client.get_item(TableName=self.table, Key=to_item(key), ConsistentRead=True)
        return from_item(got["Item"]) if "Item" in got else None

    def create_sfn_task(
        self,
        tenant: str,
        task_type: str,
        input_: list[Any],
        *,
        name: str | None = None,
        user: str = "importer",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        code = new_ulid(self.now())
        pk, sk = f"SFN_TASK#{tenant}", f"{task_type}#{code}"
        stamp = iso_time(self.now())
        item = {
            "id": f"{pk}#{sk}",
            "pk": pk,
            "sk": sk,
            "version": 0,
            "code": code,
            "type": task_type,
            "name": name or task_type,
            "tenantCode": tenant,
            "status": CREATED,
            "input": input_,
            "requestId": request_id,
            "createdAt": stamp,
            "updatedAt": stamp,
            "createdBy": user,
            "updatedBy": user,
        }
        self.client.put_item(TableName=self.table, Item=to_item(item))
        return item

    def create_sub_tasks(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        subs = []
        for index, element in enumerate(parent["input"]):
            stamp = iso_time(self.now())
            sk = f"{parent['sk']}#{index}"
            item = {
                "id": f"{parent['pk']}#{sk}",
                "pk": parent["pk"],
                "sk": sk,
                "version": 0,
                "code": new_ulid(self.now()),
                "type": parent["type"],
                "name": parent.get("name"),
                "tenantCode": parent.get("tenantCode"),
                "status": CREATED,
                "input": element,
                "requestId": parent.get("requestId"),
                "createdAt": stamp,
                "updatedAt": stamp,
                "createdBy": parent.get("createdBy"),
                "updatedBy": parent.get("updatedBy"),
            }
            self.client.put_item(TableName=self.table, Item=to_item(item))
            subs.append(item)
        return subs

    def _set(self, key: dict[str, str], status: str | None, attributes: Any) -> None:
        values = {"updatedAt": iso_time(self.now())}
        if status is not None:
            values["status"] = status
        if attributes is not None:
            values["attributes"] = attributes
        self.client.update_item(
            TableName=self.table,
            Key=to_item(key),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames={f"#{k}": k for k in values},
            ExpressionAttributeValues=to_item({f":{k}": v for k, v in values.items()}),
        )

    def _message(self, action: str, key: dict[str, str], content: dict[str, Any]) -> dict:
        return {
            "action": action,
            "pk": key["pk"],
            "sk": key["sk"],
            "table": self.table,
            "id": f"{key['pk']}#{key['sk']}",
            "tenantCode": key["pk"][key["pk"].index("#") + 1 :],
            "content": {k: v for k, v in content.items() if v is not None},
        }

    def update_task(self, key: dict[str, str], status: str | None, attributes: Any = None) -> None:
        """`updateStatus` / `updateStepFunctionTask`: the write and its `task-status`."""
        self._set(key, status, attributes)
        self.notify(self._message("task-status", key, {"status": status, "attributes": attributes}))

    def update_sub_task(self, key: dict[str, str], status: str, attributes: Any = None) -> None:
        """`updateSubTaskStatus`: the write and its `sub-task-status` (which the
        sub-task-status queue turns into the parent's counters)."""
        self._set(key, status, attributes)
        self.notify(
            self._message("sub-task-status", key, {"status": status, "attributes": attributes})
        )

    # ---------------------------------------------------------- aggregation
    def sub_tasks(self, sub: dict[str, str]) -> list[dict[str, Any]]:
        """`getAllSubTask`: every sub-task of `sub`'s parent, 10 a page as the framework."""
        prefix = parent_key(sub)["sk"] + "#"
        out: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            kw: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sk)",
                "ExpressionAttributeValues": to_item({":pk": sub["pk"], ":sk": prefix}),
                "Limit": 10,
                "ConsistentRead": True,
            }
            if start:
                kw["ExclusiveStartKey"] = start
            page = self.client.query(**kw)
            out.extend(from_item(i) for i in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    def aggregate(self, sub: dict[str, str]) -> dict[str, Any]:
        """`SubTaskQueueEventHandler.execute`: the parent's counters and status from its
        sub-tasks (COMPLETED once every one ended, failed or not, as the framework)."""
        status = format_task_status(self.sub_tasks(sub))
        done = status["subTaskSucceedCount"] + status["subTaskFailedCount"]
        state = COMPLETED if done == status["subTaskCount"] else PROCESSING
        self.update_task(parent_key(sub), state, status)
        return {"status": state, **status}

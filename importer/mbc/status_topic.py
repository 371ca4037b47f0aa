"""The command-status messages a sync publishes to SNS, as the framework's state machine does.

Each applied command's ``finish:FINISHED`` message
(:func:`importer.mbc.command_states.status_message`) goes out 10 per PublishBatch, the API's
limit; a refused entry stops the sync rather than leaving subscribers silently behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from importer.mbc.command_states import FINISH_FINISHED, status_message
from importer.mbc.model import Item

__all__ = ["StatusNotifier"]


class StatusNotifier:
    """``finish:FINISHED`` command-status messages, 10 per PublishBatch."""

    def __init__(self, sns: Any, topic: str, command_table: str) -> None:
        self.sns, self.topic, self.table = sns, topic, command_table

    def send(self, commands: Iterable[Item]) -> None:
        messages = [status_message(self.table, c, FINISH_FINISHED) for c in commands]
        for i in range(0, len(messages), 10):
            entries = [
                {
                    "Id": str(n),
                    "Message": json.dumps(m, separators=(",", ":"), default=str),
                    "MessageAttributes": {
                        "action": {"DataType": "String", "StringValue": m["action"]}
                    },
                }
                for n, m in enumerate(messages[i : i + 10])
            ]
            resp = self.sns.publish_batch(TopicArn=self.topic, PublishBatchRequestEntries=entries)
            if resp.get("Failed"):
                raise RuntimeError(f"SNS PublishBatch refused {len(resp['Failed'])} messages")

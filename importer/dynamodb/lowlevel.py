"""boto3's low-level call shape (``client.get_item(**params)``) over importer's own client.

Code written against boto3 -- the TTL read, custom data-sync handlers (``ctx.dynamodb``) --
then runs over the run's one DynamoDB client (signed HTTP or boto3) instead of opening a
second one with its own pool, credentials and retry rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from importer.dynamodb.api import DynamoClient

__all__ = ["LowLevelCalls", "Meta"]


class LowLevelCalls:
    """boto3-shaped low-level calls (``get_item(**kw)``) over our own client.

    ``importer run --sync`` has one DynamoDB client (signed HTTP or boto3); the
    TTL read and custom handlers (``ctx.dynamodb``) speak boto3's low-level
    API, so they get this view of the same client rather than a second one.
    Errors are :class:`importer.dynamodb.errors.DynamoError`.
    """

    def __init__(self, client: DynamoClient) -> None:
        self._client = client
        self.meta = Meta(region_name=client.region, endpoint_url=client.endpoint_url)

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        operation = "".join(part.capitalize() for part in name.split("_"))

        def call(**params: Any) -> dict[str, Any]:
            body = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
            return self._client.post(operation, body.encode("utf-8", "surrogatepass")).doc

        return call


@dataclass(frozen=True)
class Meta:
    region_name: str
    endpoint_url: str

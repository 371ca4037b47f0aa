"""What every DynamoDB client offers: `post(operation, body)` -> :class:`Reply`.

Writers, lookups and the retry rules depend on this surface only, never on which
client sends (signed HTTP or boto3; see :mod:`importer.dynamodb.client`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from importer.dynamodb.errors import DynamoError, WriterFatalError

__all__ = ["DynamoClient", "Reply"]


class Reply:
    """A 200 answer: `raw` bytes when the transport has them, `doc` parsed on demand."""

    __slots__ = ("raw", "_doc")

    def __init__(self, raw: bytes | None = None, doc: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self._doc = doc

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            try:
                doc = json.loads(self.raw) if self.raw else {}
            except ValueError:
                raise DynamoError(
                    "MalformedResponse", "200 response body is not JSON", status=500
                ) from None
            if not isinstance(doc, dict):
                # `[]` or `null`: an answer the client cannot read is not a success
                raise DynamoError(
                    "MalformedResponse",
                    f"200 response body is a JSON {type(doc).__name__}, not an object",
                    status=500,
                )
            self._doc = doc
        return self._doc


class DynamoClient(Protocol):
    """What writers and lookups need of DynamoDB (thread-safe).

    A client subclasses this to take the defaults of the optional capability:
    `post_many` posts one body after another, and `sends_side_by_side` is False, so
    writers and lookups send one request at a time.  A client that can send a group
    in one call (`HttpDynamoClient` on plain TCP) overrides both.
    """

    endpoint_url: str
    region: str
    #: True when `post_many` sends its bodies side by side in one call: then writers
    #: and lookups group their requests; otherwise grouping would only serialise them
    sends_side_by_side: bool = False

    def post(self, operation: str, body: bytes) -> Reply: ...

    def post_many(self, operation: str, bodies: Sequence[bytes]) -> list[Reply | DynamoError]:
        """Per body, the `Reply` that `post` returns or the `DynamoError` it raises."""
        answers: list[Reply | DynamoError] = []
        for body in bodies:
            try:
                answers.append(self.post(operation, body))
            except DynamoError as exc:
                answers.append(exc)
        return answers

    def answered(self) -> bool:
        """True once any call got an HTTP answer (the endpoint is reachable)."""
        ...

    def fatal(self, error: DynamoError, table: str = "") -> WriterFatalError: ...

    def close(self) -> None: ...

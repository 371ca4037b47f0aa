"""What a failed DynamoDB call means, and the one wording of each failure a person sees.

Deciding "retry, slow down, give up on this item, or stop the run" happens in
:func:`classify` and nowhere else: both clients raise :class:`DynamoError` with the
error code DynamoDB (or the transport) gave, and its :class:`ErrorKind` is the decision.
Messages pass through :func:`redact`, so a URL's password never reaches a log line.
"""

from __future__ import annotations

import enum
import re
from typing import Any

from importer.dynamodb.region import default_region

__all__ = [
    "FATAL_CODES",
    "LOST_CODES",
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "DynamoError",
    "ErrorKind",
    "WriterFatalError",
    "classify",
    "fatal_message",
    "missing_table_message",
    "one_line",
    "redact",
    "safe_url",
    "unreachable_message",
]


class WriterFatalError(RuntimeError):
    """The writer cannot make progress at all (credentials, endpoint, table).

    The message is a single human-readable line suitable for a CLI error; it
    never contains credentials or signed headers.
    """


def one_line(text: Any, limit: int = 300) -> str:
    """A message squeezed onto one line of at most `limit` characters."""
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ErrorKind(enum.Enum):
    """What a failed call means for the caller."""

    #: retrying cannot help and every later call would fail alike: stop the run
    FATAL = "fatal"
    #: the service asks us to slow down: retry, and tell the pacer
    THROTTLED = "throttled"
    #: a transient server or transport failure: retry
    RETRYABLE = "retryable"
    #: no connection could be opened: retry, but an endpoint never reached is fatal
    CONNECT = "connect"
    #: the request itself was refused (validation): not retried, split to find the culprit
    CLIENT = "client"


#: The service asks us to slow down.
THROTTLING_CODES: frozenset[str] = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "LimitExceededException",
    }
)
#: Server-side or transient failures.
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        # transport failures (no answer, or an unusable one)
        "ConnectionError",
        "ReadTimeoutError",
        "ProtocolError",
        "CRC32Mismatch",
        "MalformedResponse",
    }
)
#: Credentials, a missing table, an operation the endpoint does not implement.
FATAL_CODES: frozenset[str] = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDeniedException",
        "AccessDenied",
        "ExpiredTokenException",
        "ExpiredToken",
        "ResourceNotFoundException",
        "UnknownOperationException",
    }
)


#: Transport failures: the request got no answer at all (nothing says what was stored).
LOST_CODES: frozenset[str] = frozenset({"ConnectionError", "ReadTimeoutError", "ProtocolError"})

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with any credentials in a URL (`scheme://user:password@host`) masked."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def safe_url(url: str | None) -> str:
    """An endpoint URL fit to print: user and password, if any, masked."""
    return redact(url or "")


def classify(code: str, status: int) -> ErrorKind:
    """The one place an error code (and HTTP status) becomes a decision."""
    if code in FATAL_CODES or status in (401, 403):
        return ErrorKind.FATAL
    if code in THROTTLING_CODES or status == 429:
        return ErrorKind.THROTTLED
    if code in TRANSIENT_CODES or status >= 500:
        return ErrorKind.RETRYABLE
    return ErrorKind.CLIENT


class DynamoError(Exception):
    """A DynamoDB error answer, or a transport failure (code "ConnectionError").

    `doc` is the parsed error body (for TransactionCanceledException it holds
    `CancellationReasons`); `kind` is `classify(code, status)` unless the
    transport knows better (a refused connection is `ErrorKind.CONNECT`).
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        status: int = 400,
        doc: dict[str, Any] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.doc = doc or {}
        self.kind = kind or classify(code, status)

    def describe(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


def missing_table_message(table: str, endpoint: str | None, region: str | None) -> str:
    """The one wording of "no such table", in every command (run, validate, plan, sync).

    A user who mistyped a name sees the same line whichever command met it first,
    naming the three things that decide which table is meant.
    """
    what = f"table {table!r}" if table else "the table"
    where = safe_url(endpoint) or "AWS"
    return f"{what} does not exist at {where} (region {default_region(region)})"


def unreachable_message(endpoint: str | None, region: str | None, detail: str) -> str:
    """The one wording of "nothing answers there", in every command (as for a missing table)."""
    return (
        f"cannot reach DynamoDB endpoint {safe_url(endpoint) or 'AWS'} "
        f"(region {default_region(region)}): {redact(detail)}"
    )


def fatal_message(error: DynamoError, endpoint: str, region: str, table: str) -> str:
    endpoint = safe_url(endpoint)
    where = f"at {endpoint} (region {region})"
    if error.code == "ResourceNotFoundException":
        return missing_table_message(table, endpoint, region)
    if error.code == "UnknownOperationException":
        op = error.doc.get("operation") or "this operation"
        return f"the DynamoDB endpoint {endpoint} does not implement {op}" + (
            " (strict mode needs TransactWriteItems: use --mode upsert)" if "Transact" in op else ""
        )
    return (
        f"DynamoDB refused the request credentials {where} "
        f"({error.code}: {error.message or 'no message'}); check AWS_PROFILE / "
        "AWS_ACCESS_KEY_ID and the region"
    )

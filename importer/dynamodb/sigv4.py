"""Minimal SigV4 signer for DynamoDB JSON-1.0 POSTs (what `HttpDynamoClient` sends).

botocore's `SigV4Auth.add_auth` redoes per request what is constant for one
endpoint (an `AWSRequest`, URL re-parsing, header maps, four HMACs to derive the
key, debug logging), and at fifty workers that CPU bounds the run.
For a fixed endpoint, method and header set almost all of that is constant, so
this signer precomputes it and per request does only: SHA-256 of the body,
SHA-256 of the canonical request, one HMAC-SHA256.

It produces exactly the headers botocore signs for a DynamoDB client call:
``content-type;host;x-amz-date[;x-amz-security-token];x-amz-target`` with the
body's SHA-256 as payload hash (DynamoDB never disables payload signing and
botocore sends no ``X-Amz-Content-SHA256`` header for it).  tests/test_sigv4.py
checks the ``Authorization`` header against botocore's byte for byte.

Caching and refresh:

* the ``X-Amz-Date`` stamp, the credential scope and the constant parts of the
  canonical request are rebuilt once per clock second;
* the credentials are re-read with ``get_frozen_credentials()`` at that moment
  too (at most once a second), so botocore's refreshable credentials (assumed
  roles, SSO, instance profiles) keep refreshing -- botocore refreshes 15/10
  minutes before expiry, far above a one-second lag;
* the derived signing key is cached per (secret key, date, region) and derived
  again only when the date or the credentials change.

Thread-safe without locks: the per-second state is one immutable tuple swapped
atomically; concurrent renewals compute the same value.

Nothing here logs; keys, tokens and signatures never leave the returned headers.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NamedTuple
from urllib.parse import quote

__all__ = ["SigV4Signer", "SigningPlan", "c_signing", "signing_key"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_CONTENT_TYPE = "application/x-amz-json-1.0"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode("utf-8"), "sha256")


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 derived key: HMAC chain over date (YYYYMMDD), region, service."""
    k = _hmac(f"AWS4{secret_key}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


class SigningPlan(NamedTuple):
    """What signing a body for one target needs, constant within one clock second:
    `importer._sign.sign_heads` signs a group of bodies from it in C."""

    canonical_head: bytes  # the canonical request up to the body's hash (UTF-8)
    sts_head: bytes  # the string to sign up to the canonical request's hash
    key: bytes  # the derived signing key
    headers: str  # the header lines up to the signature: "...Authorization: ...Signature="

    def __repr__(self) -> str:  # it holds the signing key: never shown
        return "SigningPlan(...)"


def _load_c_signing() -> bool:
    """`importer._sign`, given OpenSSL's SHA256 from the libcrypto hashlib loaded
    (its path in /proc/self/maps, the function's address through ctypes: Linux)."""
    try:
        import ctypes

        from importer import _sign
    except ImportError:
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libcrypto" in line}
    except OSError:
        return False
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            function = ctypes.CDLL(path).SHA256  # already loaded: found, not loaded again
        except (OSError, AttributeError):
            continue
        if _sign._load(ctypes.cast(function, ctypes.c_void_p).value or 0):
            return True
    return False


_C_SIGNING: bool | None = None


def c_signing() -> bool:
    """True when `importer._sign` signs in C (OpenSSL's SHA256 found in this process)."""
    global _C_SIGNING
    if _C_SIGNING is None:
        _C_SIGNING = _load_c_signing()
    return _C_SIGNING


#: hashlib lets go of the GIL for data of 2048 bytes or more; fed in smaller pieces it does not
_GIL_FREE_PIECE = 2047


def _body_hash(body: bytes) -> str:
    """sha256 of `body`, hex, holding the GIL throughout.

    Hashing a request body takes a few microseconds; giving the GIL away for
    it costs more than that when 50 workers wait for it (a futex round trip,
    and the hashing thread queues behind the others to get it back).
    """
    n = len(body)
    if n < 2048:
        return sha256(body).hexdigest()
    h = sha256()
    view = memoryview(body)
    for i in range(0, n, _GIL_FREE_PIECE):
        h.update(view[i : i + _GIL_FREE_PIECE])
    return h.hexdigest()


def normalize_path(path: str) -> str:
    """The path as SigV4 canonicalises it: dot segments resolved (RFC 3986 5.2.4), no empty ones.

    What botocore's `normalize_url_path` does; written here so that signing
    does not import botocore (a tenth of a second of every start).
    """
    if not path:
        return "/"
    kept: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if kept:
                kept.pop()
        elif seg and seg != ".":
            kept.append(seg)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and kept else ""
    return first + "/".join(kept) + last


def _trimall(value: str) -> str:
    return " ".join(value.split())


@dataclass(slots=True)
class _State:
    """Everything constant within one clock second for one set of credentials."""

    start: float
    end: float
    canon_head: str
    canon_tail: str
    sts_head: str
    #: HMAC-SHA256 inner and outer hashes, keyed and ready to copy
    pads: tuple[Any, Any]
    auth_head: str
    base: dict[str, str]
    key: bytes
    plans: dict[str, SigningPlan]


class SigV4Signer:
    """Signs DynamoDB JSON-1.0 POSTs to one endpoint (`host`, `path`) in one region.

    `credentials` is a botocore credentials object (anything with
    `get_frozen_credentials()` returning `access_key`, `secret_key`, `token`).
    `host` is the Host header value exactly as sent (botocore's
    `_host_from_url`: lowercase, default port omitted).  `clock` returns epoch
    seconds (injectable for tests).

    `headers(target, body)` returns a new dict of the headers to send: Host,
    Content-Type, X-Amz-Target, X-Amz-Date, X-Amz-Security-Token (with a
    session token) and Authorization.  Exceptions from the credential provider
    propagate unchanged.
    """

    def __init__(
        self,
        credentials: Any,
        region: str,
        host: str,
        path: str = "/",
        *,
        service: str = "dynamodb",
        content_type: str = _CONTENT_TYPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.host = host
        self.content_type = content_type
        self._clock = clock
        self._canonical_path = quote(normalize_path(path or "/"), safe="/~")
        self._state: _State | None = None
        self._key_cache: tuple[str, str, bytes] | None = None  # (secret, date, key), one swap

    # ------------------------------------------------------------------ public

    def headers(self, target: str, body: bytes) -> dict[str, str]:
        """Signed headers for POSTing `body` with `X-Amz-Target: target` (no whitespace)."""
        st = self._current()
        canonical = st.canon_head + target + st.canon_tail + _body_hash(body)
        sts = st.sts_head + sha256(canonical.encode("utf-8")).hexdigest()
        headers = st.base.copy()
        headers["X-Amz-Target"] = target
        inner, outer = st.pads[0].copy(), st.pads[1].copy()
        inner.update(sts.encode("utf-8"))
        outer.update(inner.digest())
        headers["Authorization"] = st.auth_head + outer.hexdigest()
        return headers

    def plan(self, target: str) -> SigningPlan:
        """What `headers(target, body)` signs with, for signing bodies in C: the same
        signature, and the header lines in the order `headers` returns them."""
        st = self._current()
        plan = st.plans.get(target)
        if plan is None:
            lines = "".join([f"{k}: {v}\r\n" for k, v in st.base.items()])
            plan = st.plans[target] = SigningPlan(
                (st.canon_head + target + st.canon_tail).encode("utf-8"),
                st.sts_head.encode("utf-8"),
                st.key,
                f"{lines}X-Amz-Target: {target}\r\nAuthorization: {st.auth_head}",
            )
        return plan

    def invalidate(self) -> None:
        """Re-read the credentials (and the clock) on the next request."""
        self._state = None

    # ------------------------------------------------------------------ internals

    def _current(self) -> _State:
        """This clock second's state (renewed, and the credentials re-read, once a second)."""
        now = self._clock()
        st = self._state
        if st is None or not (st.start <= now < st.end):
            st = self._renew(now)
        return st

    def _renew(self, now: float) -> _State:
        sec = int(now // 1)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(sec))
        date = amz_date[:8]
        frozen = self.credentials.get_frozen_credentials()
        access_key, secret_key, token = frozen.access_key, frozen.secret_key, frozen.token
        cached = self._key_cache
        if cached is not None and cached[0] == secret_key and cached[1] == date:
            key = cached[2]
        else:
            key = signing_key(secret_key, date, self.region, self.service)
            self._key_cache = (secret_key, date, key)
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        # HMAC-SHA256 with this key (RFC 2104), its padded key already hashed in: a
        # request only copies and feeds them.  `hmac.digest` lets go of the GIL for
        # each signature, however short, and the signing thread then queues for it
        # behind every other worker; hashing short data here keeps it.
        pads = (
            sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0"))),
            sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0"))),
        )
        # canonical headers, sorted by lowercase name
        canon = [
            f"content-type:{_trimall(self.content_type)}",
            f"host:{_trimall(self.host)}",
            f"x-amz-date:{amz_date}",
        ]
        names = ["content-type", "host", "x-amz-date"]
        base = {"Host": self.host, "Content-Type": self.content_type, "X-Amz-Date": amz_date}
        if token:
            canon.append(f"x-amz-security-token:{_trimall(token)}")
            names.append("x-amz-security-token")
            base["X-Amz-Security-Token"] = token
        names.append("x-amz-target")
        signed = ";".join(names)
        st = _State(
            start=float(sec),
            end=float(sec + 1),
            canon_head=f"POST\n{self._canonical_path}\n\n" + "\n".join(canon) + "\nx-amz-target:",
            canon_tail=f"\n\n{signed}\n",
            sts_head=f"{_ALGORITHM}\n{amz_date}\n{scope}\n",
            pads=pads,
            auth_head=f"{_ALGORITHM} Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature=",
            base=base,
            key=key,
            plans={},
        )
        self._state = st
        return st

"""importer.dynamodb.sigv4 signs exactly like botocore's SigV4Auth (the proof: equal headers).

moto's server does not verify signatures, so byte-for-byte equality with
botocore -- both with a hand-built AWSRequest and with what a real botocore
DynamoDB client puts on the wire -- is what shows the signer is right.
"""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials, RefreshableCredentials

from importer.dynamodb import sigv4
from importer.dynamodb.sigv4 import SigV4Signer

TARGET = "DynamoDB_20120810.BatchWriteItem"
CT = "application/x-amz-json-1.0"

BODIES = [
    b"",
    b"{}",
    b'{"RequestItems":{"T":[{"PutRequest":{"Item":{"pk":{"S":"a"},"sk":{"S":"b"}}}}]}}',
    json.dumps(
        {"RequestItems": {"T\u00e9": [{"PutRequest": {"Item": {"n": {"S": "ünïcode ✓ — 😀"}}}}]}},
        ensure_ascii=False,
    ).encode(),
    json.dumps({"k": "x" * 100_000}).encode(),
]

CREDS = [
    Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    Credentials("ASIAEXAMPLE", "secret/with+chars", "FQoGZXIvYXdzE//token+with/chars=="),
]

WHEN = [
    datetime.datetime(2024, 1, 1, 0, 0, 0),
    datetime.datetime(2026, 11, 25, 23, 59, 59),
    datetime.datetime(2030, 2, 28, 12, 34, 56),
]


def _epoch(dt: datetime.datetime) -> float:
    return dt.replace(tzinfo=datetime.UTC).timestamp()


@pytest.fixture
def frozen_clock(monkeypatch):
    """Sets botocore's signing time; returns a setter."""
    now = {"dt": WHEN[0]}
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now["dt"])

    def set_(dt):
        now["dt"] = dt

    return set_


def _botocore_headers(creds, region, url, host, body, target=TARGET) -> dict[str, str]:
    req = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Host": host, "Content-Type": CT, "X-Amz-Target": target},
    )
    SigV4Auth(creds.get_frozen_credentials(), "dynamodb", region).add_auth(req)
    return dict(req.headers.items())


@pytest.mark.parametrize("creds", CREDS, ids=["no-token", "session-token"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "ap-southeast-2"])
@pytest.mark.parametrize(
    "url,host,path",
    [
        ("http://127.0.0.1:8000/", "127.0.0.1:8000", "/"),
        ("https://dynamodb.eu-west-2.amazonaws.com/", "dynamodb.eu-west-2.amazonaws.com", "/"),
        ("http://localhost:4566/some/pre fix/", "localhost:4566", "/some/pre fix/"),
    ],
)
def test_headers_equal_botocore(frozen_clock, creds, region, url, host, path):
    for dt in WHEN:
        frozen_clock(dt)
        signer = SigV4Signer(creds, region, host, path, clock=lambda dt=dt: _epoch(dt) + 0.75)
        for body in BODIES:
            for target in (TARGET, "DynamoDB_20120810.BatchGetItem"):
                want = _botocore_headers(creds, region, url, host, body, target)
                got = signer.headers(target, body)
                assert got["Authorization"] == want["Authorization"]
                assert got == want


def test_headers_equal_a_real_botocore_dynamodb_client(frozen_clock):
    """What a botocore DynamoDB client signs and sends, for the same body and time."""
    frozen_clock(WHEN[1])
    for creds in CREDS:
        session = boto3.Session(
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )
        client = session.client(
            "dynamodb", region_name="eu-west-2", endpoint_url="http://127.0.0.1:8000"
        )
        sent = []

        def capture(request, sent=sent, **_):
            sent.append(request)
            return AWSResponse(request.url, 200, {}, None)

        client.meta.events.register("before-send.dynamodb.*", capture)
        item = {"pk": {"S": "ünï ✓"}, "sk": {"S": "b"}, "n": {"N": "1.5"}}
        try:
            client.batch_write_item(RequestItems={"T": [{"PutRequest": {"Item": item}}]})
        except Exception:
            pass  # the fake empty response does not parse; the request was captured
        (req,) = sent
        body = req.body if isinstance(req.body, bytes) else req.body.encode()
        signer = SigV4Signer(creds, "eu-west-2", "127.0.0.1:8000", clock=lambda: _epoch(WHEN[1]))
        got = signer.headers(req.headers["X-Amz-Target"].decode(), body)
        wire = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in req.headers.items()}
        signed = wire["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        assert got["Authorization"] == wire["Authorization"]
        for name in signed:
            key = {k.lower(): k for k in got}[name]
            if name != "host":  # botocore lets the HTTP client add Host
                assert got[key] == wire[next(k for k in wire if k.lower() == name)]
        assert ("x-amz-security-token" in signed) == bool(creds.token)


class _CountingCreds:
    def __init__(self, *creds):
        self.seq = list(creds)
        self.calls = 0

    def get_frozen_credentials(self):
        self.calls += 1
        return self.seq[0].get_frozen_credentials()


def test_key_cached_per_date_and_credentials_reread_once_a_second(monkeypatch, frozen_clock):
    derived = []
    real = sigv4.signing_key
    monkeypatch.setattr(sigv4, "signing_key", lambda *a: derived.append(a[1:]) or real(*a))
    creds = _CountingCreds(CREDS[0], CREDS[1])
    t = {"now": _epoch(WHEN[0])}
    signer = SigV4Signer(creds, "us-east-1", "h:1", clock=lambda: t["now"])
    for _ in range(100):
        signer.headers(TARGET, b"{}")
    assert creds.calls == 1 and len(derived) == 1
    t["now"] += 1.0  # next second: credentials re-read, key reused (same date, secret)
    signer.headers(TARGET, b"{}")
    assert creds.calls == 2 and len(derived) == 1
    t["now"] = _epoch(WHEN[0] + datetime.timedelta(days=1))  # new date: key re-derived
    h = signer.headers(TARGET, b"{}")
    assert len(derived) == 2 and derived[-1][0] == "20240102"
    frozen_clock(WHEN[0] + datetime.timedelta(days=1))
    assert h == _botocore_headers(CREDS[0], "us-east-1", "http://h:1/", "h:1", b"{}")
    creds.seq.pop(0)  # rotated credentials are picked up within a second
    t["now"] += 1.0
    h = signer.headers(TARGET, b"{}")
    assert "Credential=ASIAEXAMPLE/" in h["Authorization"] and "X-Amz-Security-Token" in h
    assert len(derived) == 3
    t["now"] += 0.5  # same second: no re-read
    signer.headers(TARGET, b"{}")
    assert creds.calls == 4


def test_refreshable_credentials_refresh():
    """botocore's refreshable credentials near expiry refresh; the signer follows."""
    n = {"i": 0}

    def refresh():
        n["i"] += 1
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
        return {
            "access_key": f"AKID{n['i']}",
            "secret_key": f"secret{n['i']}",
            "token": f"token{n['i']}",
            "expiry_time": expiry.isoformat(),
        }

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    t = {"now": _epoch(WHEN[2])}
    signer = SigV4Signer(creds, "us-east-1", "h", clock=lambda: t["now"])
    seen = []
    for _ in range(3):
        h = signer.headers(TARGET, b"{}")
        seen.append(
            (h["Authorization"].split("Credential=")[1].split("/")[0], h["X-Amz-Security-Token"])
        )
        t["now"] += 1.0
    # 60 s left is inside botocore's refresh window: every read refreshed them
    assert seen == [("AKID2", "token2"), ("AKID3", "token3"), ("AKID4", "token4")]


def test_repr_and_errors_leak_no_secrets():
    class Boom:
        def get_frozen_credentials(self):
            raise RuntimeError("provider down")

    signer = SigV4Signer(Boom(), "us-east-1", "h")
    with pytest.raises(RuntimeError, match="provider down"):
        signer.headers(TARGET, b"{}")
    s = SigV4Signer(CREDS[1], "us-east-1", "h")
    s.headers(TARGET, b"{}")
    assert CREDS[1].secret_key not in repr(s)


def test_signature_changes_with_body_target_and_time():
    clock = SimpleNamespace(now=_epoch(WHEN[0]))
    s = SigV4Signer(CREDS[0], "us-east-1", "h", clock=lambda: clock.now)
    a = s.headers(TARGET, b"{}")["Authorization"]
    assert s.headers(TARGET, b"{ }")["Authorization"] != a
    assert s.headers("DynamoDB_20120810.GetItem", b"{}")["Authorization"] != a
    clock.now += 1
    assert s.headers(TARGET, b"{}")["Authorization"] != a


def test_the_body_hash_fed_in_pieces_is_sha256():
    import hashlib
    import random

    from importer.dynamodb.sigv4 import _body_hash

    rng = random.Random(7)
    for n in (0, 1, 2046, 2047, 2048, 2049, 4094, 4095, 6000, 1 << 20):
        body = rng.randbytes(n)
        assert _body_hash(body) == hashlib.sha256(body).hexdigest()


def test_paths_and_host_headers_match_botocore():
    from botocore.auth import _host_from_url
    from botocore.utils import normalize_url_path

    from importer.dynamodb.http_exchange import host_header
    from importer.dynamodb.sigv4 import normalize_path

    for path in [
        "",
        "/",
        "//",
        "/a/b",
        "/a//b/",
        "/a/./b/../c",
        "a/b",
        "/..",
        "/a/..",
        "./",
        "/a/b/..",
    ]:
        assert normalize_path(path) == normalize_url_path(path), path
    for url in [
        "http://localhost:8000/",
        "http://LOCALHOST:80",
        "https://dynamodb.eu-west-1.amazonaws.com",
        "https://user:pw@Example.com:443/x",
        "http://127.0.0.1:4566/",
        "http://[::1]:8000/",
        "https://[2001:db8::1]/",
    ]:
        assert host_header(url) == _host_from_url(url), url

"""Requests signed in C (`importer._sign`) carry exactly the head Python signs.

tests/test_sigv4.py proves the Python signer equal to botocore's, byte for byte;
here the C path is held to the Python one: the same head for any body, target,
credentials and clock second, and OpenSSL's SHA256 as found equal to hashlib's.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer import _sign
from importer.dynamodb import sigv4
from importer.dynamodb.client import HttpDynamoClient
from importer.dynamodb.sigv4 import SigV4Signer

pytestmark = pytest.mark.skipif(not sigv4.c_signing(), reason="no OpenSSL SHA256 found")

OPERATIONS = ["BatchWriteItem", "BatchGetItem", "DescribeTable", "TransactWriteItems"]


class _Frozen:
    def __init__(self, access: str, secret: str, token: str | None) -> None:
        self.frozen = SimpleNamespace(access_key=access, secret_key=secret, token=token)

    def get_frozen_credentials(self) -> SimpleNamespace:
        return self.frozen


def _client(creds: _Frozen, now: float, url: str) -> HttpDynamoClient:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "unused")
        env.setenv("AWS_SECRET_ACCESS_KEY", "unused")
        client = HttpDynamoClient(region="eu-west-3", endpoint_url=url, workers=2)
    client._signer = SigV4Signer(creds, "eu-west-3", client._signer.host, "/", clock=lambda: now)
    return client


@settings(max_examples=150, deadline=None)
@given(
    bodies=st.lists(
        st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(lambda n: b"x" * n)),
        max_size=6,
    ),
    operation=st.sampled_from(OPERATIONS),
    token=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126))),
    secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    now=st.floats(0, 4_000_000_000),
    url=st.sampled_from(["http://127.0.0.1:8000", "http://localhost:9/x/../y", "https://h"]),
)
def test_c_heads_equal_python_heads(bodies, operation, token, secret, now, url):
    client = _client(_Frozen("AKIDEXAMPLE", secret, token or None), now, url)
    assert client._c_signing
    in_c = client._heads(operation, bodies)
    assert in_c == [client._head(operation, body) for body in bodies]
    client._c_signing = False
    assert client._heads(operation, bodies) == in_c
    client.close()


def test_a_signing_plan_never_shows_its_key() -> None:
    client = _client(_Frozen("AKIDEXAMPLE", "s3cret", "tok"), 1_700_000_000.0, "http://h:1")
    plan = client._signer.plan("DynamoDB_20120810.BatchWriteItem")
    assert plan.key.hex() not in repr(plan) and str(plan.key) not in str(plan)
    client.close()


def test_a_new_second_or_new_credentials_sign_anew() -> None:
    creds = _Frozen("AKIDEXAMPLE", "s3cret", None)
    clock = {"now": 1_700_000_000.2}
    client = _client(creds, 0, "http://127.0.0.1:8000")
    client._signer = SigV4Signer(creds, "eu-west-3", "127.0.0.1:8000", clock=lambda: clock["now"])
    body = b'{"TableName":"T"}'
    first = client._heads("DescribeTable", [body])
    clock["now"] += 1.0
    creds.frozen = SimpleNamespace(access_key="AKIDOTHER", secret_key="other", token="tok")
    second = client._heads("DescribeTable", [body])
    assert second != first
    assert second == [client._head("DescribeTable", body)]
    assert b"X-Amz-Security-Token: tok\r\n" in second[0]
    client.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_the_sha256_found_is_sha256(data: bytes) -> None:
    assert _sign.digest(data) == hashlib.sha256(data).digest()


def test_sign_heads_takes_only_bytes_and_a_32_byte_key() -> None:
    plan = (b"c", b"s", b"k" * 32, b"H", b"T")
    assert _sign.sign_heads(*plan, []) == []
    with pytest.raises(TypeError):
        _sign.sign_heads(*plan, ["text"])
    with pytest.raises(ValueError):
        _sign.sign_heads(b"c", b"s", b"short", b"H", b"T", [b""])

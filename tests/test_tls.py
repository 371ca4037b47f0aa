"""The signed-HTTP client over TLS, as it talks to DynamoDB itself: verified, kept alive, timed out.

A throwaway certificate authority signs a certificate for 127.0.0.1; the client
trusts it through AWS_CA_BUNDLE, as botocore does.  The server answers every
request on a connection until the client hangs up, or stalls when told to.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

cryptography = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from importer.dynamodb.client import HttpDynamoClient  # noqa: E402
from importer.dynamodb.errors import DynamoError  # noqa: E402
from tests.conftest import http_ok, read_http_request  # noqa: E402

ANSWER = b'{"UnprocessedItems":{}}'


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _TlsServer:
    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.bodies: list[bytes] = []
        self.stall = threading.Event()
        #: a stalled answer is held until the server closes (an event, not a sleep: the
        #: client's timeout fires first however loaded the machine is)
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with conn:
            try:
                while (body := read_http_request(conn)) is not None:
                    if self.stall.is_set():
                        self.closed.wait(60)  # never answers while the client waits
                        return
                    self.bodies.append(body)
                    conn.sendall(http_ok(ANSWER))
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch) -> Iterator[_TlsServer]:
    cert, key = _certificate(tmp_path)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTLS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    server = _TlsServer(cert, key)
    yield server
    server.close()


def test_requests_go_over_one_verified_kept_alive_connection(tls_server: _TlsServer):
    client = HttpDynamoClient(
        region="us-east-1", endpoint_url=f"https://127.0.0.1:{tls_server.port}", workers=2
    )
    try:
        bodies = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 5000) for i in range(6)]
        for body in bodies:
            assert client.post("BatchWriteItem", body).raw == ANSWER
    finally:
        client.close()
    assert tls_server.bodies == bodies
    assert tls_server.connections == 1


def test_an_untrusted_certificate_is_refused(tls_server: _TlsServer, monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE")
    client = HttpDynamoClient(
        region="us-east-1", endpoint_url=f"https://127.0.0.1:{tls_server.port}", workers=1
    )
    try:
        with pytest.raises(DynamoError) as err:
            client.post("BatchWriteItem", b"{}")
    finally:
        client.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value.message) or "certificate" in str(
        err.value.message
    )
    assert tls_server.bodies == []


def test_a_stalled_answer_times_out(tls_server: _TlsServer):
    client = HttpDynamoClient(
        region="us-east-1",
        endpoint_url=f"https://127.0.0.1:{tls_server.port}",
        workers=1,
        timeout=0.3,
    )
    tls_server.stall.set()
    try:
        with pytest.raises(DynamoError) as err:
            client.post("BatchWriteItem", b"{}")
    finally:
        client.close()
    assert err.value.code == "ReadTimeoutError"

"""AWS credentials for signing: boto3's chain, or the environment alone for a local endpoint.

A failure to find or load credentials stops the run in one line that says what to set;
the keys themselves are never printed.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from importer.dynamodb.errors import WriterFatalError, one_line

__all__ = ["EnvCredentials", "load_credentials", "plain_local_setup"]


def load_credentials(session: Any) -> Any:
    """The session's credentials, or one readable line saying what to set."""
    try:
        creds = session.get_credentials()
    except Exception as exc:  # botocore raises many kinds while resolving
        raise WriterFatalError(f"cannot load AWS credentials: {one_line(exc)}") from None
    if creds is None:
        raise WriterFatalError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available)"
        )
    return creds


class EnvCredentials:
    """Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self.access_key, self.secret_key, self.token = access_key, secret_key, token

    def get_frozen_credentials(self) -> EnvCredentials:
        return self


def plain_local_setup(endpoint_url: str | None) -> tuple[EnvCredentials, str] | None:
    """(credentials, endpoint) read from the environment alone, for a plain-HTTP endpoint.

    A run against a local stand-in (moto, DynamoDB Local, the benchmarks'
    endpoint) with keys in the environment resolves exactly what boto3 would:
    the environment's keys come first in botocore's chain, and an endpoint in
    the environment overrides the config file.  Importing boto3 and building a
    session for it cost a quarter of a second of a short run's start.  Any
    other set-up (a profile, an expiring or partial key, https, no endpoint
    given) returns None and goes through boto3.
    """
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    if not endpoint_url:
        if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
            return None
        endpoint_url = env.get("AWS_ENDPOINT_URL_DYNAMODB") or env.get("AWS_ENDPOINT_URL")
    if not endpoint_url or urlsplit(endpoint_url).scheme != "http":
        return None
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None
    return EnvCredentials(key, secret, token), endpoint_url

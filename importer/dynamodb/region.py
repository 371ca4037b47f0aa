"""Which AWS region a run talks to: one rule for every command and the Lambdas.

Given explicitly (a flag, a BatchInput value), else the environment AWS itself sets
(`AWS_REGION` in a Lambda, `AWS_DEFAULT_REGION` for the CLI), else us-east-1 -- the
region boto3's own tools fall back on for DynamoDB and the local stand-in creates its
tables in.  Written once so that `run`, `plan`, `sync`, the handler and the command
states cannot name different regions for the same environment.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_REGION", "default_region"]

DEFAULT_REGION = "us-east-1"


def default_region(value: str | None = None) -> str:
    """The region: `value` if given, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return value or env or DEFAULT_REGION

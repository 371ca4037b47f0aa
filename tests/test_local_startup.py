"""A run against a local plain-HTTP endpoint, keys in the environment, starts without boto3.

(Nor does `importer run` load the modules that only add other commands.)

boto3 would resolve the same keys and endpoint (the environment comes first in
its chains), but importing it and building a session was a quarter of a second
of every run's start.  Any other set-up still goes through boto3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from importer.dynamodb.credentials import plain_local_setup
from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "secret"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_environment_alone_decides_only_when_boto3_would_decide_the_same(clean_env):
    env = clean_env
    assert plain_local_setup("http://127.0.0.1:9") is None  # no keys
    env.setenv("AWS_ACCESS_KEY_ID", "AKID")
    assert plain_local_setup("http://127.0.0.1:9") is None  # half a key: boto3 says why
    env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    creds, url = plain_local_setup("http://127.0.0.1:9")
    assert (creds.access_key, creds.secret_key, creds.token, url) == (
        "AKID",
        "s",
        None,
        "http://127.0.0.1:9",
    )
    assert plain_local_setup("https://dynamodb.eu-west-1.amazonaws.com") is None
    assert plain_local_setup(None) is None  # boto3 resolves the endpoint
    env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7")
    assert plain_local_setup(None)[1] == "http://127.0.0.1:7"
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8")
    assert plain_local_setup(None)[1] == "http://127.0.0.1:8"
    env.setenv("AWS_SESSION_TOKEN", "tok")
    assert plain_local_setup(None)[0].get_frozen_credentials().token == "tok"
    env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert plain_local_setup(None) is None
    env.setenv("AWS_CREDENTIAL_EXPIRATION", "2030-01-01T00:00:00Z")
    assert plain_local_setup("http://127.0.0.1:9") is None  # refreshable: boto3's


def test_a_local_run_writes_without_importing_boto3(tmp_path: Path):
    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC)
    src = tmp_path / "in.csv"
    src.write_text("sku,name,price,qty,active\nA-1,one,1.5,1,y\nA-2,two,2.5,2,n\n")
    script = textwrap.dedent(
        """
        import sys
        from importer.cli.main import main
        code = main(sys.argv[1:])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
        print("LOADED", loaded)
        # nor the modules that only add other commands
        extras = ("aws.deploy", "aws.package", "cli.deploy_commands", "cli.plan", "mbc.sync",
                  "cli.local_moto", "cli.spec_draft")
        print("EXTRAS", sorted(m for m in extras if "importer." + m in sys.modules))
        sys.exit(code)
        """
    )
    with DdbServer(tables=["app-command", "app-data"]) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(KEYS, AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=server.endpoint_url)
        out = subprocess.run(
            [sys.executable, "-c", script, "run", str(src), "--spec", str(spec)]
            + ["--table", "app-command", "--quiet"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "LOADED []" in out.stdout, out.stdout
        assert "EXTRAS []" in out.stdout, out.stdout
        assert len(server.items("app-command")) == 2

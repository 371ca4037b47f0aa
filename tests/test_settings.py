"""One settings type (`PipelineSettings`) for `importer run`, the library and the Lambda child:
the same defaults (mode, region) and the same checks, in the same words, wherever they come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.aws import handler
from importer.aws.deploy import render_template
from importer.cli.main import _pipeline_settings, _UsageError, build_parser, main
from importer.input.batching import BatchLimitError
from importer.modes.stage import DEFAULT_MODE
from importer.run.driver import RunConfig
from importer.run.pipeline import PipelineSettings, SettingsError
from importer.transform.spec import load_spec
from tests.conftest import PRODUCT_SPEC
from tests.test_handler import batch, env, row  # noqa: F401 - env is a fixture

TABLE = "dev-app-master-command"


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "spec.toml"
    path.write_text(PRODUCT_SPEC)
    return load_spec(path)


def _from_cli(spec, *flags: str) -> PipelineSettings:
    args = build_parser(extensions=False).parse_args(
        ["run", "in.csv", "--spec", "spec.toml", "--table", TABLE, *flags]
    )
    return _pipeline_settings(args, spec, dry_run=False)


def _from_lambda(spec, attributes: dict[str, str]) -> PipelineSettings:
    given = handler._given({"Attributes": {"table": TABLE, **attributes}})
    return handler._settings(given, spec, writer="http", engine="native")


def test_the_default_mode_is_one_for_the_cli_the_library_the_lambda_and_the_template(
    spec, monkeypatch
):
    monkeypatch.delenv("IMPORTER_MODE", raising=False)
    modes = {
        "cli": _from_cli(spec).mode,
        "library": PipelineSettings(spec=spec, table=TABLE).mode,
        "lambda": _from_lambda(spec, {}).mode,
        "template": render_template()["Parameters"]["Mode"]["Default"],
    }
    assert set(modes.values()) == {DEFAULT_MODE}, modes


def test_the_default_region_is_one_for_the_cli_the_library_and_the_lambda(spec, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    regions = {
        _from_cli(spec).region,
        PipelineSettings(spec=spec, table=TABLE).region,
        _from_lambda(spec, {}).region,
    }
    assert regions == {"eu-west-3"}
    # and the one-line errors name the region the run talked to, not a fixed us-east-1
    from importer.dynamodb.errors import missing_table_message, unreachable_message

    assert missing_table_message("t", None, None).endswith("(region eu-west-3)")
    assert "(region eu-west-3)" in unreachable_message(None, None, "refused")
    assert _from_cli(spec, "--region", "ap-south-1").region == "ap-south-1"


@pytest.mark.parametrize(
    "attributes, kwargs, said",
    [
        ({"mode": "fast"}, {"mode": "fast"}, "unknown mode 'fast' (one of: insert, upsert, "),
        ({"update": "patch"}, {"update": "patch"}, "unknown update 'patch' (one of: merge, "),
    ],
)
def test_a_bad_value_is_refused_in_the_same_words_by_the_lambda_and_the_library(
    spec, attributes, kwargs, said
):
    with pytest.raises(SettingsError) as library:
        PipelineSettings(spec=spec, table=TABLE, **kwargs)
    with pytest.raises(handler.EventError) as child:
        _from_lambda(spec, attributes)
    assert str(child.value) == str(library.value) and said in str(child.value)
    assert "\n" not in str(child.value)


def test_a_bad_mode_in_the_lambdas_environment_is_one_error_and_writes_nothing(
    env,  # noqa: F811 - the fixture
    monkeypatch,
):
    from tests.conftest import scan_all

    monkeypatch.setenv("IMPORTER_MODE", "fast")
    with pytest.raises(handler.EventError, match=r"^unknown mode 'fast' \(one of: insert, upsert"):
        handler.handle_event(
            batch([row("A-1")], env["table"]),
            client=env["client"],
            s3_client=env["s3"],
            engine="reference",
        )
    assert scan_all(env["table"]) == {}


def test_the_cli_says_a_bad_setting_as_the_settings_do(spec, tmp_path, capsys):
    with pytest.raises(_UsageError, match="^--workers must be at least 1, got 0$"):
        _from_cli(spec, "--workers", "0")
    with pytest.raises(SettingsError, match="^--workers must be at least 1, got 0$"):
        PipelineSettings(spec=spec, table=TABLE, workers=0)
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    (tmp_path / "in.csv").write_text("sku,name,price,qty,active\nA,a,1,1,yes\n")
    argv = ["run", "in.csv", "--spec", "spec.toml", "--table", TABLE, "--max-wcu", "-5"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--max-wcu must be positive, got -5.0")


def test_batch_limits_are_checked_when_a_run_is_described():
    """The library's `RunConfig` checks what `importer run` checked on its own."""
    with pytest.raises(BatchLimitError, match="MaxItemsPerBatch must be at least 1, got 0"):
        RunConfig(source="in.csv", batch_items=0)
    with pytest.raises(BatchLimitError, match="over Step Functions' limit"):
        RunConfig(source="in.csv", batch_bytes=300_000)


def test_the_engine_default_is_the_fast_one_and_an_unknown_engine_is_refused(spec):
    assert PipelineSettings(spec=spec, table=TABLE).engine == "native"
    assert _from_cli(spec).engine == "native"
    said = r"^unknown engine 'fast' \(one of: native, reference\)$"
    with pytest.raises(SettingsError, match=said):
        PipelineSettings(spec=spec, table=TABLE, engine="fast")

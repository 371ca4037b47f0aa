"""SAM template, Lambda package and the asl/template/package subcommands."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import importer
from importer.aws import deploy, statemachine
from importer.aws import package as lambda_package
from importer.aws.deploy import render_template
from importer.aws.package import PackageError, Target, build_package
from importer.cli import deploy_commands
from importer.input import batching

NATIVE = lambda_package.native_extension()
EXTENSIONS = lambda_package.native_extensions()
TARGET = lambda_package.build_target()


def _tool(name: str) -> str | None:
    # The one installed beside this interpreter first: an older cfn-lint earlier on
    # PATH carries older runtime-deprecation data and fails templates for that alone.
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def require_tool(name: str) -> str:
    path = _tool(name)
    if path:
        return path
    message = f"{name} is not installed (pip install cfn-lint)"
    if os.environ.get("IMPORTER_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def statements(template: dict, resource: str) -> list[dict]:
    [policy] = template["Resources"][resource]["Properties"]["Policies"]
    return policy["Statement"]


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


# -------------------------------------------------------------------- template


def test_template_is_sam_with_function_and_state_machine():
    t = render_template()
    assert t["Transform"] == "AWS::Serverless-2016-10-31"
    resources = t["Resources"]
    fn = resources["CsvRowsHandlerFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    props = fn["Properties"]
    assert props["Runtime"] == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert props["Handler"] == "importer.aws.handler.lambda_handler"
    assert props["CodeUri"] == "importer-lambda.zip"
    machine = platform.machine().lower()
    assert props["Architectures"] == ["arm64" if machine in ("aarch64", "arm64") else "x86_64"]
    assert 1 <= props["Timeout"] <= 300
    assert props["MemorySize"] == 1024
    assert props["Environment"]["Variables"]["IMPORTER_TABLE"] == {"Ref": "TableName"}
    sm = resources["ImportCsvStateMachine"]
    assert sm["Type"] == "AWS::Serverless::StateMachine"
    for name in ("TableName", "InputBucketName", "SpecS3Uri", "ResultBucketName"):
        assert name in t["Parameters"]
    assert set(t["Outputs"]) >= {"ImportCsvStateMachineArn", "CsvRowsHandlerFunctionName"}
    assert t["Outputs"]["ImportCsvStateMachineArn"]["Value"] == {"Ref": "ImportCsvStateMachine"}


def test_template_embeds_the_generated_definition_with_substitutions():
    t = render_template(max_items_per_batch=25, max_concurrency=20)
    props = t["Resources"]["ImportCsvStateMachine"]["Properties"]
    assert props["Definition"] == statemachine.import_csv_definition(
        max_items_per_batch=25, max_concurrency=20, result_prefix="${ResultPrefix}"
    )
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", json.dumps(props["Definition"])))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert props["DefinitionSubstitutions"]["CsvRowsHandlerFunctionArn"] == {
        "Fn::GetAtt": ["CsvRowsHandlerFunction", "Arn"]
    }


def test_template_options():
    t = render_template(code_uri="dist/x.zip", runtime="python3.12", architecture="arm64")
    props = t["Resources"]["CsvRowsHandlerFunction"]["Properties"]
    assert props["CodeUri"] == "dist/x.zip"
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    with pytest.raises(ValueError, match="EXPRESS"):
        render_template(function_timeout=301)
    with pytest.raises(ValueError):
        render_template(architecture="sparc")
    with pytest.raises(batching.BatchLimitError):
        render_template(max_items_per_batch=None, max_input_bytes_per_batch=10)


def _resolved(mode: str, **parameters: str):
    from tests.test_iam_policy import Stack, physical_ids

    base = {"TableName": "dev-app-master-command", "InputBucketName": "inbox"}
    base |= {"SpecS3Uri": "s3://cfg/spec.toml", "Mode": mode, **parameters}
    return Stack(render_template(), base, physical=physical_ids())


def test_template_iam_is_least_privilege():
    t = render_template()
    for resource in ("CsvRowsHandlerFunction", "ImportCsvStateMachine"):
        for leaf in _walk(t["Resources"][resource]["Properties"]["Policies"]):
            assert leaf != "*"

    table = "arn:aws:dynamodb:us-east-1:123456789012:table/dev-app-master-"
    for mode, tables in deploy.MODE_GRANTS.items():
        stack = _resolved(mode)
        [policy] = stack.resource("CsvRowsHandlerFunction")["Properties"]["Policies"]
        granted: dict[str, set[str]] = {}
        for st in policy["Statement"]:
            assert st["Effect"] == "Allow" and set(st) == {"Sid", "Effect", "Action", "Resource"}
            for action in st["Action"]:
                assert "*" not in action
                granted.setdefault(action, set()).update(st["Resource"])
        expected = {
            "s3:GetObject": {"arn:aws:s3:::cfg/spec.toml"},  # the spec, not the input CSVs
            "s3:PutObject": {"arn:aws:s3:::created-results/import-rejects/*"},
        }
        for role, actions in tables.items():
            for action in actions:
                expected.setdefault(action, set()).add(table + role)
        assert granted == expected, mode
        env = stack.resource("CsvRowsHandlerFunction")["Properties"]["Environment"]["Variables"]
        assert env["IMPORTER_MODE"] == mode and "IMPORTER_DATA_TABLE" not in env
    assert "dynamodb:PutItem" in deploy.MODE_GRANTS["strict"]["command"]
    assert "dynamodb:BatchWriteItem" not in deploy.MODE_GRANTS["strict"]["command"]

    sm = statements(t, "ImportCsvStateMachine")
    by_sid = {st["Sid"]: st for st in sm}
    invoke = by_sid["InvokeChildHandler"]
    assert invoke["Action"] == ["lambda:InvokeFunction"]
    assert invoke["Resource"][0] == {"Fn::GetAtt": ["CsvRowsHandlerFunction", "Arn"]}
    actions = {a for st in sm for a in st["Action"]}
    assert actions == {
        "lambda:InvokeFunction",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListMultipartUploadParts",
        "s3:AbortMultipartUpload",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
    }
    name = t["Resources"]["ImportCsvStateMachine"]["Properties"]["Name"]["Fn::Sub"]
    assert name in json.dumps(by_sid["DistributedMapChildren"]["Resource"])
    assert "${ResultPrefix}/*" in json.dumps(by_sid["ResultWriter"]["Resource"])
    assert "${InputBucketName}/${InputPrefix}*" in json.dumps(by_sid["ItemReader"]["Resource"])


def test_template_names_an_explicit_data_table_in_env_and_policy():
    stack = _resolved("upsert", DataTableName="latest", ResultBucketName="mine")
    props = stack.resource("CsvRowsHandlerFunction")["Properties"]
    assert props["Environment"]["Variables"]["IMPORTER_DATA_TABLE"] == "latest"
    assert props["Environment"]["Variables"]["IMPORTER_REJECTS"] == "s3://mine/import-rejects"
    [policy] = props["Policies"]
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert "arn:aws:dynamodb:us-east-1:123456789012:table/latest" in resources
    assert not any(r.endswith("-data") for r in resources)
    blind = _resolved("blind").resource("CsvRowsHandlerFunction")["Properties"]["Policies"][0]
    assert [s["Sid"] for s in blind["Statement"]] == [
        "ReadSpec",
        "WriteRejects",
        "BatchWriteCommandTable",
    ]
    with pytest.raises(ValueError, match="Mode"):
        _resolved("fast")


def test_template_creates_the_result_bucket_only_when_none_is_given():
    t = render_template()
    bucket = t["Resources"]["ImportResultBucket"]
    assert bucket["Condition"] == "CreateResultBucket"
    assert t["Conditions"]["CreateResultBucket"] == {
        "Fn::Equals": [{"Ref": "ResultBucketName"}, ""]
    }
    assert t["Parameters"]["ResultBucketName"]["Default"] == ""


def test_template_round_trips_through_json():
    t = render_template()
    assert json.loads(json.dumps(t)) == t
    assert json.dumps(t, sort_keys=True) == json.dumps(render_template(), sort_keys=True)


def test_sam_transform_works_offline(monkeypatch):
    pytest.importorskip("samtranslator", reason="aws-sam-translator comes with cfn-lint")
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    class Policies:
        def load(self):
            return {
                "AWSLambdaBasicExecutionRole": (
                    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
                )
            }

    t = render_template()
    for resource in t["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://b/k.zip"
    out = transform(t, {}, Policies())
    types = {name: r["Type"] for name, r in out["Resources"].items()}
    assert types["CsvRowsHandlerFunction"] == "AWS::Lambda::Function"
    assert types["ImportCsvStateMachine"] == "AWS::StepFunctions::StateMachine"
    assert types["CsvRowsHandlerFunctionRole"] == "AWS::IAM::Role"
    assert types["ImportCsvStateMachineRole"] == "AWS::IAM::Role"
    sm = out["Resources"]["ImportCsvStateMachine"]["Properties"]
    assert set(sm["DefinitionSubstitutions"]) == {
        "CsvRowsHandlerFunctionArn",
        "ResultBucket",
        "ResultPrefix",
    }


def test_cfn_lint_accepts_the_template(tmp_path):
    cfn_lint = require_tool("cfn-lint")
    path = tmp_path / "template.json"
    path.write_text(json.dumps(render_template(), indent=2))
    result = subprocess.run(
        [cfn_lint, "--", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_is_really_checking(tmp_path):
    cfn_lint = require_tool("cfn-lint")
    t = render_template()
    t["Resources"]["CsvRowsHandlerFunction"]["Properties"]["Bogus"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(t))
    result = subprocess.run(
        [cfn_lint, "--", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "Bogus" in result.stdout


# --------------------------------------------------------------------- package


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("pkg") / "importer-lambda.zip")


def test_package_holds_the_importer_package_and_the_native_core(package):
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert names == sorted(names)
    assert "importer/__init__.py" in names
    assert "importer/aws/statemachine.py" in names
    assert "importer/aws/deploy.py" in names
    assert f"importer/{NATIVE.name}" in names
    assert [n for n in names if n.startswith("importer/_native")] == [f"importer/{NATIVE.name}"]
    # every compiled module, the build this interpreter loads and no other
    assert [n for n in names if n.endswith(".so")] == sorted(
        f"importer/{p.name}" for p in EXTENSIONS
    )
    assert {n.split("/")[1].split(".")[0] for n in names if n.endswith(".so")} == set(
        lambda_package.EXTENSIONS
    )
    assert all(n.startswith("importer/") for n in names)
    for bad in ("__pycache__", ".pyc", "tests/", "benchmarks/", "pyarrow", "polars", "boto3"):
        assert not any(bad in n for n in names), bad


def test_package_is_byte_for_byte_reproducible(package, tmp_path):
    again = build_package(tmp_path / "again.zip")
    assert again.read_bytes() == package.read_bytes()
    with zipfile.ZipFile(package) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_package_imports_from_the_zip_alone(package, tmp_path):
    root = tmp_path / "unzipped"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(root)
    code = (
        "import importer, importer._native, importer._http, importer._sign, "
        "importer.modes.stage, importer.aws.statemachine as s; "
        "from importer.dynamodb import sigv4; "
        "assert sigv4.c_signing(); "
        "print(importer.__file__); print(len(s.all_definitions()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    assert Path(first).resolve().is_relative_to(root.resolve())
    assert second == str(len(statemachine.MACHINES))


def test_package_refuses_an_extension_for_another_runtime(tmp_path):
    other = "python3.12" if TARGET.runtime != "python3.12" else "python3.13"
    with pytest.raises(PackageError, match="built for"):
        build_package(tmp_path / "x.zip", target=Target(other, TARGET.architecture))
    other_arch = "arm64" if TARGET.architecture == "x86_64" else "x86_64"
    with pytest.raises(PackageError, match="built for"):
        build_package(tmp_path / "y.zip", target=Target(TARGET.runtime, other_arch))
    assert not (tmp_path / "x.zip").exists()


def test_check_extension_reads_abi_tag_and_glibc(tmp_path):
    so = tmp_path / "_native.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"\x7fELF...GLIBC_2.2.5\x00GLIBC_2.14\x00")
    lambda_package.check_extension(so, Target("python3.11", "x86_64"))
    so.write_bytes(b"\x7fELF...GLIBC_2.2.5\x00GLIBC_2.34\x00")
    with pytest.raises(PackageError, match="glibc 2.34"):
        lambda_package.check_extension(so, Target("python3.11", "x86_64"))
    untagged = tmp_path / "_native.so"
    untagged.write_bytes(b"")
    with pytest.raises(PackageError, match="ABI tag"):
        lambda_package.check_extension(untagged, Target("python3.11", "x86_64"))


def test_package_fails_clearly_without_the_native_extension(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "importer._native", None)  # import -> ImportError
    with pytest.raises(PackageError, match="importer._native is not built"):
        build_package(tmp_path / "x.zip")


def test_handler_import_check_flags_module_level_heavy_imports(tmp_path):
    pkg = tmp_path / "importer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fast.py").write_text(
        "from typing import TYPE_CHECKING\nimport json\nimport boto3\n"
        "if TYPE_CHECKING:\n    import polars\n"
        "def later():\n    import zstandard\n"
    )
    (pkg / "slow.py").write_text("import pyarrow.csv as pc\n")
    (pkg / "aws").mkdir()
    (pkg / "aws" / "__init__.py").write_text("")
    (pkg / "aws" / "handler.py").write_text("from importer import fast\nfrom ..spec import x\n")
    (pkg / "spec.py").write_text("import tomllib\n")
    files = {f"importer/{p.relative_to(pkg).as_posix()}": p for p in pkg.rglob("*.py")}
    assert lambda_package.handler_third_party_imports(files) == {"boto3"}
    (pkg / "spec.py").write_text("from importer.slow import pc\n")
    assert lambda_package.handler_third_party_imports(files) == {"boto3", "pyarrow"}
    del files["importer/aws/handler.py"]
    assert lambda_package.handler_third_party_imports(files) == set()


def test_the_real_handler_needs_nothing_the_lambda_runtime_lacks():
    files = lambda_package._package_files(Path(importer.__file__).resolve().parent, EXTENSIONS)
    if "importer/aws/handler.py" not in files:
        pytest.skip("importer/aws/handler.py not written yet")
    assert (
        lambda_package.handler_third_party_imports(files) <= lambda_package.LAMBDA_RUNTIME_PROVIDES
    )


# ------------------------------------------------------------------------- CLI


def test_cli_asl_prints_json(run_cli):
    captured = run_cli("asl")
    assert captured.code == 0
    assert json.loads(captured.stdout) == statemachine.import_csv_definition()
    captured = run_cli("asl", "--machine", "all", "--max-concurrency", "8")
    assert captured.code == 0
    out = json.loads(captured.stdout)
    assert list(out) == list(statemachine.MACHINES)
    assert out["import-csv"]["States"]["import-csv"]["MaxConcurrency"] == 8
    captured = run_cli("asl", "--machine", "task-handler")
    assert captured.code == 0
    assert json.loads(captured.stdout) == statemachine.task_handler_definition()


def test_cli_asl_options_and_out_file(tmp_path, run_cli):
    out = tmp_path / "asl.json"
    argv = ["asl", "--out", str(out), "--batch-items", "100", "--batch-bytes", "0"]
    argv += ["--tolerated-failure-percentage", "10"]
    captured = run_cli(*argv)
    assert captured.code == 0
    m = json.loads(out.read_text())["States"]["import-csv"]
    assert m["ItemBatcher"]["MaxItemsPerBatch"] == 100
    assert "MaxInputBytesPerBatch" not in m["ItemBatcher"]
    assert m["ToleratedFailurePercentage"] == 10


def test_cli_asl_explains_the_ten_byte_batch(run_cli):
    captured = run_cli("asl", "--batch-items", "0", "--batch-bytes", "10")
    assert captured.code == 2
    err = captured.stderr
    assert "10" in err and "MaxItemsPerBatch" in err


def test_cli_template_and_package(tmp_path, run_cli):
    out = tmp_path / "template.json"
    captured = run_cli("template", "--out", str(out), "--code-uri", "build/l.zip")
    assert captured.code == 0
    t = json.loads(out.read_text())
    assert t["Resources"]["CsvRowsHandlerFunction"]["Properties"]["CodeUri"] == "build/l.zip"
    zip_path = tmp_path / "l.zip"
    captured = run_cli("package", "--out", str(zip_path))
    assert captured.code == 0
    assert captured.stdout.strip() == str(zip_path)  # stdout: the path alone, for scripts
    assert zipfile.is_zipfile(zip_path)
    # stderr: what was built and what to do with it
    err = captured.stderr
    with zipfile.ZipFile(zip_path) as zf:
        files = len(zf.infolist())
    assert f"built {zip_path} (" in err and f", {files} files)" in err
    assert re.search(r"\(\d+\.\d (kB|MB), ", err)
    assert f"for {TARGET.runtime} on {TARGET.architecture}" in err
    assert "handler importer.aws.handler.lambda_handler" in err
    assert f"importer template --code-uri {zip_path} --out template.json" in err
    assert "sam deploy --template-file template.json" in err and "CAPABILITY_IAM" in err
    for parameter in ("TableName=", "InputBucketName=", "SpecS3Uri=", "Mode="):
        assert parameter in err and parameter[:-1] in render_template()["Parameters"]
    assert f"fileb://{zip_path}" in err


def test_cli_package_failure_is_one_line(monkeypatch, tmp_path, run_cli):
    monkeypatch.setitem(sys.modules, "importer._native", None)
    captured = run_cli("package", "--out", str(tmp_path / "x.zip"))
    assert captured.code == 2
    assert captured.stdout == ""
    assert captured.stderr.startswith("importer package: importer._native is not built")
    assert captured.stderr.count("\n") == 1


def test_cli_asl_says_who_fills_the_placeholders(run_cli):
    captured = run_cli("asl")
    assert captured.code == 0
    assert json.loads(captured.stdout) == statemachine.import_csv_definition()  # stdout: JSON only
    err = captured.stderr
    assert "${CsvRowsHandlerFunctionArn}" in err and "${ResultBucket}" in err
    assert "DefinitionSubstitutions" in err and "importer template" in err
    assert "--lambda-arn ARN" in err and "--result-bucket NAME" in err
    # every placeholder the note explains is one the template's substitutions fill
    left = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", captured.stdout))
    subs = render_template()["Resources"]["ImportCsvStateMachine"]["Properties"]
    assert left == set(deploy_commands.PLACEHOLDERS) and left <= set(
        subs["DefinitionSubstitutions"]
    )


def test_cli_asl_fills_placeholders_by_hand(run_cli):
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:csv-rows"
    captured = run_cli("asl", "--lambda-arn", arn, "--result-bucket", "my-results")
    assert captured.code == 0
    assert captured.stderr == ""  # nothing left to explain
    assert "${" not in captured.stdout
    assert json.loads(captured.stdout) == statemachine.import_csv_definition(
        lambda_arn=arn, result_bucket="my-results"
    )
    captured = run_cli("asl", "--machine", "task-handler", "--lambda-arn", arn)
    assert captured.code == 0
    assert captured.stderr == "" and arn in captured.stdout
    captured = run_cli("asl", "--machine", "all", "--lambda-arn", arn)
    assert captured.code == 0
    assert (
        "${ResultBucket}" in captured.stderr and "CsvRowsHandlerFunctionArn" not in captured.stderr
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lambda-arn", "csv-rows"], "is not a Lambda function ARN"),
        (["--result-bucket", "Bad_Bucket"], "is not an S3 bucket name"),
        (["--machine", "task-handler", "--result-bucket", "ok-bucket"], "applies to import-csv"),
    ],
)
def test_cli_asl_refuses_bad_substitutions(argv, message, run_cli):
    captured = run_cli("asl", *argv)
    assert captured.code == 2
    assert captured.stdout == "" and message in captured.stderr and captured.stderr.count("\n") == 1


def test_the_write_budget_is_a_parameter_shared_by_the_maps_children():
    template = render_template(max_concurrency=40)
    assert template["Parameters"]["MaxWcu"]["Default"] == 0
    env = template["Resources"][deploy.FUNCTION_ID]["Properties"]["Environment"]["Variables"]
    assert env["IMPORTER_MAX_WCU"] == {"Ref": "MaxWcu"}
    assert env["IMPORTER_MAX_CONCURRENCY"] == "40"

"""Deployable artefacts: the SAM template, the Lambda zip, and their CLI.

* :func:`render_template` - a SAM template (JSON-able dict) with the import-csv
  state machine, the child Lambda and least-privilege roles for both.
* :func:`build_package` - the Lambda zip: the ``importer`` package with the
  compiled ``importer._native`` from this install, checked against the Lambda
  runtime and architecture the template names, byte-for-byte reproducible.
* :func:`register` - the ``importer asl|template|package`` subcommands.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer import batching, statemachine

DEFAULT_PACKAGE = "importer-lambda.zip"
HANDLER = "importer.handler.lambda_handler"
FUNCTION_ID = "CsvRowsHandlerFunction"
STATE_MACHINE_ID = "ImportCsvStateMachine"
RESULT_BUCKET_ID = "ImportResultBucket"

# An EXPRESS child execution lives at most 5 minutes: the Lambda must finish well
# inside that, or the child times out instead of reporting the Lambda's error.
EXPRESS_CHILD_LIMIT_SECONDS = 300
DEFAULT_FUNCTION_TIMEOUT = 240

# glibc of the Lambda Python runtimes' OS (Amazon Linux 2 up to python3.11,
# Amazon Linux 2023 from python3.12): the extension must not need newer symbols.
RUNTIME_GLIBC: dict[str, tuple[int, int]] = {
    "python3.9": (2, 26),
    "python3.10": (2, 26),
    "python3.11": (2, 26),
    "python3.12": (2, 34),
    "python3.13": (2, 34),
}

# Packages the Lambda Python runtime provides; anything else the handler
# imports at module level must be in the zip (and we ship only `importer`).
LAMBDA_RUNTIME_PROVIDES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
)

_EXCLUDED_DIRS = frozenset({"__pycache__", "tests", "benchmarks", "build", ".pytest_cache"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".c", ".o", ".pyx", ".pxd", ".html", ".pyi")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
_ARCH_TO_ELF = {"x86_64": "x86_64", "arm64": "aarch64"}
_EXT_TAG = re.compile(r"\.cpython-(\d)(\d+)-([a-z0-9_]+)-linux-gnu\.so$")


class PackageError(RuntimeError):
    """The Lambda package cannot be built, or would not load on Lambda."""


@dataclass(frozen=True, slots=True)
class Target:
    """A Lambda runtime + architecture pair, e.g. ``python3.11`` on ``x86_64``."""

    runtime: str
    architecture: str


def build_target() -> Target:
    """The Lambda runtime and architecture matching this interpreter and machine."""
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    machine = platform.machine().lower()
    if machine not in _ARCH_ALIASES:
        raise PackageError(f"no Lambda architecture for this machine ({platform.machine()})")
    return Target(runtime, _ARCH_ALIASES[machine])


# --------------------------------------------------------------------- template


def _sub(text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Fn::Sub": [text, variables] if variables else text}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _result_bucket() -> dict[str, Any]:
    return {"Fn::If": ["CreateResultBucket", _ref(RESULT_BUCKET_ID), _ref("ResultBucketName")]}


def _s3_arn(path: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return _sub("arn:${AWS::Partition}:s3:::" + path, variables)


def render_template(
    *,
    code_uri: str = DEFAULT_PACKAGE,
    runtime: str | None = None,
    architecture: str | None = None,
    function_timeout: int = DEFAULT_FUNCTION_TIMEOUT,
    memory_size: int = 1024,
    max_items_per_batch: int | None = 10,
    max_input_bytes_per_batch: int | None = batching.AWS_MAX_INPUT_BYTES,
    max_concurrency: int = 50,
    tolerated_failure_percentage: float = 5,
) -> dict[str, Any]:
    """A SAM template deploying the import-csv pipeline.

    Runtime and architecture default to this interpreter and machine, which is
    what :func:`build_package` checks the compiled extension against: build the
    zip and render the template on the same machine.  Table, buckets, prefixes
    and the spec location are stack parameters; the result bucket is created
    when ``ResultBucketName`` is left empty.
    """
    target = build_target()
    runtime = runtime or target.runtime
    architecture = _ARCH_ALIASES.get((architecture or target.architecture).lower())
    if architecture is None:
        raise ValueError("architecture must be x86_64 or arm64")
    if not 1 <= function_timeout <= EXPRESS_CHILD_LIMIT_SECONDS:
        raise ValueError(
            f"function timeout must be 1..{EXPRESS_CHILD_LIMIT_SECONDS} s: an EXPRESS child "
            f"execution runs at most 5 minutes, got {function_timeout}"
        )

    definition = statemachine.import_csv_definition(
        lambda_arn="${CsvRowsHandlerFunctionArn}",
        max_items_per_batch=max_items_per_batch,
        max_input_bytes_per_batch=max_input_bytes_per_batch,
        max_concurrency=max_concurrency,
        tolerated_failure_percentage=tolerated_failure_percentage,
        result_bucket="${ResultBucket}",
        result_prefix="${ResultPrefix}",
    )
    state_machine_name = "${AWS::StackName}-import-csv"
    table_arn = _sub(
        "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}"
    )
    input_objects = _s3_arn("${InputBucketName}/${InputPrefix}*")
    spec_object = _s3_arn(
        "${SpecPath}",
        {"SpecPath": {"Fn::Select": [1, {"Fn::Split": ["s3://", _ref("SpecS3Uri")]}]}},
    )
    bucket_var = {"Bucket": _result_bucket()}
    function_arn = {"Fn::GetAtt": [FUNCTION_ID, "Arn"]}
    states_arn = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"

    function_policy = {
        "Statement": [
            {
                "Sid": "ReadInputAndSpec",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [input_objects, spec_object],
            },
            {
                "Sid": "WriteRejects",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [_s3_arn("${Bucket}/${RejectsPrefix}/*", bucket_var)],
            },
            {
                "Sid": "WriteTable",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:BatchWriteItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:DescribeTable",
                ],
                "Resource": [table_arn],
            },
        ]
    }
    state_machine_policy = {
        "Statement": [
            {
                "Sid": "InvokeChildHandler",
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": [function_arn, {"Fn::Sub": "${" + FUNCTION_ID + ".Arn}:*"}],
            },
            {
                "Sid": "ItemReader",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [input_objects],
            },
            {
                "Sid": "ResultWriter",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": [_s3_arn("${Bucket}/${ResultPrefix}/*", bucket_var)],
            },
            {
                "Sid": "DistributedMapChildren",
                "Effect": "Allow",
                "Action": ["states:StartExecution"],
                "Resource": [_sub(f"{states_arn}:stateMachine:{state_machine_name}")],
            },
            {
                "Sid": "DistributedMapChildExecutions",
                "Effect": "Allow",
                "Action": ["states:DescribeExecution", "states:StopExecution"],
                "Resource": [
                    _sub(f"{states_arn}:execution:{state_machine_name}/*"),
                    _sub(f"{states_arn}:express:{state_machine_name}/*"),
                ],
            },
        ]
    }

    key_prefix = {"Type": "String", "AllowedPattern": r"^[^/].*[^/]$|^[^/]$"}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": (
            "importer: CSV in S3 -> Step Functions Distributed Map (import-csv) -> "
            "Lambda -> DynamoDB BatchWriteItem as MBC CQRS command records"
        ),
        "Parameters": {
            "TableName": {
                "Type": "String",
                "Description": "DynamoDB table the records are written to",
                "AllowedPattern": r"^[a-zA-Z0-9_.-]{3,255}$",
            },
            "InputBucketName": {
                "Type": "String",
                "Description": "Bucket holding the CSV files to import",
                "AllowedPattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            },
            "InputPrefix": {
                "Type": "String",
                "Default": "",
                "Description": "Key prefix the CSV files live under (empty: the whole bucket)",
            },
            "SpecS3Uri": {
                "Type": "String",
                "Description": "s3://bucket/key of the import spec (TOML or JSON)",
                "AllowedPattern": r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$",
            },
            "ResultBucketName": {
                "Type": "String",
                "Default": "",
                "Description": "Bucket for Map run results and rejects (empty: create one)",
            },
            "ResultPrefix": {
                **key_prefix,
                "Default": "import-results",
                "Description": "Key prefix of the Distributed Map ResultWriter output",
            },
            "RejectsPrefix": {
                **key_prefix,
                "Default": "import-rejects",
                "Description": "Key prefix the handler writes rejected rows under",
            },
        },
        "Conditions": {"CreateResultBucket": {"Fn::Equals": [_ref("ResultBucketName"), ""]}},
        "Resources": {
            RESULT_BUCKET_ID: {
                "Type": "AWS::S3::Bucket",
                "Condition": "CreateResultBucket",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                },
            },
            FUNCTION_ID: {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Description": "import-csv Distributed Map child: one batch of CSV rows",
                    "Runtime": runtime,
                    "Handler": HANDLER,
                    "CodeUri": code_uri,
                    "Architectures": [architecture],
                    "Timeout": function_timeout,
                    "MemorySize": memory_size,
                    "Environment": {
                        "Variables": {
                            "IMPORTER_TABLE": _ref("TableName"),
                            "IMPORTER_SPEC": _ref("SpecS3Uri"),
                            "IMPORTER_REJECTS": _sub("s3://${Bucket}/${RejectsPrefix}", bucket_var),
                        }
                    },
                    "Policies": [function_policy],
                },
            },
            STATE_MACHINE_ID: {
                "Type": "AWS::Serverless::StateMachine",
                "Properties": {
                    "Name": _sub(state_machine_name),
                    "Type": "STANDARD",
                    "Definition": definition,
                    "DefinitionSubstitutions": {
                        "CsvRowsHandlerFunctionArn": function_arn,
                        "ResultBucket": _result_bucket(),
                        "ResultPrefix": _ref("ResultPrefix"),
                    },
                    "Policies": [state_machine_policy],
                },
            },
        },
        "Outputs": {
            "ImportCsvStateMachineArn": {
                "Description": "Start an import: StartExecution with {bucket, key}",
                "Value": _ref(STATE_MACHINE_ID),
            },
            "CsvRowsHandlerFunctionName": {"Value": _ref(FUNCTION_ID)},
            "ResultBucketName": {"Value": _result_bucket()},
        },
    }


# ---------------------------------------------------------------------- package


def native_extension() -> Path:
    """The compiled ``importer._native`` this interpreter loads."""
    try:
        import importer._native as native
    except ImportError as exc:
        raise PackageError(
            "importer._native is not built: run `pip install -e .` (or "
            "`python setup.py build_ext --inplace`) before packaging the Lambda"
        ) from exc
    path = Path(native.__file__ or "")
    if path.suffix != ".so":
        raise PackageError(f"importer._native is not a compiled extension: {path}")
    return path


def _required_glibc(data: bytes) -> tuple[int, int] | None:
    versions = [
        (int(m.group(1)), int(m.group(2))) for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", data)
    ]
    return max(versions) if versions else None


def check_extension(path: Path, target: Target) -> None:
    """Fail unless the extension's ABI tag and glibc needs fit the Lambda target."""
    match = _EXT_TAG.search(path.name)
    if match is None:
        raise PackageError(
            f"{path.name}: no CPython ABI tag (expected _native.cpython-XY-ARCH-linux-gnu.so); "
            "cannot tell which Lambda runtime it loads on"
        )
    runtime = f"python{match.group(1)}.{match.group(2)}"
    arch = match.group(3)
    if runtime != target.runtime or arch != _ARCH_TO_ELF[target.architecture]:
        raise PackageError(
            f"{path.name} is built for {runtime} on {arch}, but the Lambda is "
            f"{target.runtime} on {target.architecture} ({_ARCH_TO_ELF[target.architecture]}): "
            "rebuild the extension with that interpreter on that architecture"
        )
    needed = _required_glibc(path.read_bytes())
    available = RUNTIME_GLIBC.get(target.runtime)
    if needed and available and needed > available:
        raise PackageError(
            f"{path.name} needs glibc {needed[0]}.{needed[1]} but the {target.runtime} "
            f"Lambda runtime has {available[0]}.{available[1]}: build it on an older glibc "
            "(e.g. a manylinux image) or pick a newer runtime"
        )


def _package_files(package_dir: Path, extension: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d not in _EXCLUDED_DIRS and not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if name.endswith(_EXCLUDED_SUFFIXES) or name.startswith("."):
                continue
            if name.startswith("_native") and name.endswith(".so"):
                continue  # only the one this interpreter loads, added below
            arc = "importer/" + path.relative_to(package_dir).as_posix()
            files[arc] = path
    files["importer/" + extension.name] = extension
    return files


def _module_imports(source: str, package: str = "importer") -> set[str]:
    """Top-level package names imported at module level (not inside functions)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against `package`
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                if base:
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                pass  # guarded imports are optional by construction
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(source).body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def handler_third_party_imports(files: dict[str, Path]) -> set[str]:
    """Non-stdlib packages the handler pulls in at import time, transitively."""
    sources = {
        arc[: -len(".py")].replace("/", ".").removesuffix(".__init__"): path
        for arc, path in files.items()
        if arc.endswith(".py")
    }
    start = "importer.handler"
    if start not in sources:
        return set()
    seen: set[str] = set()
    third_party: set[str] = set()
    todo = [start, "importer"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _module_imports(sources[module].read_text(encoding="utf-8")):
            top = name.split(".")[0]
            if top == "importer":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in sources:
                        todo.append(candidate)
            elif top not in sys.stdlib_module_names:
                third_party.add(top)
    return third_party


def build_package(out_path: Path, *, target: Target | None = None) -> Path:
    """Build the Lambda zip at ``out_path`` and return it.

    Contents: the ``importer`` package (sources and the compiled
    ``importer/_native*.so`` this interpreter loads), without caches, tests or
    benchmarks.  No third-party libraries: the Lambda runtime provides boto3,
    and the handler must not need pyarrow or polars (checked).  Entries are
    sorted with fixed timestamps and modes, so two builds are byte-identical.
    """
    import importer

    target = target or build_target()
    extension = native_extension()
    check_extension(extension, target)
    package_dir = Path(importer.__file__).resolve().parent
    files = _package_files(package_dir, extension)

    missing = sorted(handler_third_party_imports(files) - LAMBDA_RUNTIME_PROVIDES)
    if missing:
        raise PackageError(
            "importer.handler imports at module level packages the Lambda runtime lacks "
            f"and the zip does not ship: {', '.join(missing)}; import them lazily where "
            "they are used, or keep them off the handler's path"
        )

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".importer-lambda-", suffix=".zip", dir=out_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w") as zf:
            for arc in sorted(files):
                path = files[arc]
                info = zipfile.ZipInfo(arc, date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr holds the mode
                mode = 0o755 if arc.endswith(".so") else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                zf.writestr(info, path.read_bytes(), compresslevel=9)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out_path


# -------------------------------------------------------------------------- CLI


def _write_json(value: Any, out: str | None) -> None:
    text = json.dumps(value, indent=2) + "\n"
    if out and out != "-":
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _limit(value: int | None) -> int | None:
    return None if value == 0 else value


def _cmd_asl(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        "max_items_per_batch": _limit(args.batch_items),
        "max_input_bytes_per_batch": _limit(args.batch_bytes),
        "max_concurrency": args.max_concurrency,
        "tolerated_failure_percentage": args.tolerated_failure_percentage,
    }
    try:
        if args.machine == "all":
            value: dict[str, Any] = statemachine.all_definitions(**options)
        elif args.machine == "import-csv":
            value = statemachine.import_csv_definition(**options)
        else:
            value = statemachine.definition(args.machine)
    except (batching.BatchLimitError, ValueError) as exc:
        print(f"importer asl: {exc}", file=sys.stderr)
        return 2
    _write_json(value, args.out)
    return 0


def _cmd_template(args: argparse.Namespace) -> int:
    try:
        value = render_template(
            code_uri=args.code_uri,
            max_items_per_batch=_limit(args.batch_items),
            max_input_bytes_per_batch=_limit(args.batch_bytes),
            max_concurrency=args.max_concurrency,
            tolerated_failure_percentage=args.tolerated_failure_percentage,
        )
    except (batching.BatchLimitError, PackageError, ValueError) as exc:
        print(f"importer template: {exc}", file=sys.stderr)
        return 2
    _write_json(value, args.out)
    return 0


def _cmd_package(args: argparse.Namespace) -> int:
    try:
        path = build_package(Path(args.out))
    except PackageError as exc:
        print(f"importer package: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_map_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-items",
        type=int,
        default=10,
        metavar="N",
        help="ItemBatcher MaxItemsPerBatch (default 10; 0 = no item cap)",
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=batching.AWS_MAX_INPUT_BYTES,
        metavar="N",
        help="ItemBatcher MaxInputBytesPerBatch, at most 262144 (default; 0 = no byte cap)",
    )
    parser.add_argument("--max-concurrency", type=int, default=50, metavar="N")
    parser.add_argument(
        "--tolerated-failure-percentage", type=float, default=5, metavar="P", help="0..100"
    )


def register(subparsers: Any) -> None:
    """Add ``asl``, ``template`` and ``package`` to the ``importer`` CLI."""
    asl = subparsers.add_parser(
        "asl", help="print the Amazon States Language of the state machines"
    )
    asl.add_argument("--machine", choices=[*statemachine.MACHINES, "all"], default="import-csv")
    asl.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    _add_map_options(asl)
    asl.set_defaults(func=_cmd_asl)

    template = subparsers.add_parser("template", help="print the SAM template (JSON)")
    template.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    template.add_argument(
        "--code-uri",
        default=DEFAULT_PACKAGE,
        metavar="PATH",
        help=f"the Lambda zip (default {DEFAULT_PACKAGE}, as `importer package` builds)",
    )
    _add_map_options(template)
    template.set_defaults(func=_cmd_template)

    package = subparsers.add_parser("package", help="build the Lambda zip")
    package.add_argument("--out", default=DEFAULT_PACKAGE, metavar="PATH")
    package.set_defaults(func=_cmd_package)

"""``importer asl``, ``importer template`` and ``importer package``.

What they write to stdout stays machine-readable (JSON, the zip's path), so scripts can pipe
it; what a person needs next (placeholders to fill, the deploy commands) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from importer.aws import statemachine
from importer.aws.deploy import HANDLER, render_template
from importer.aws.package import DEFAULT_PACKAGE, PackageError, Target, build_package, build_target
from importer.input import batching
from importer.input.options import INPUT_TYPES, MANIFEST_TYPES

__all__ = ["PLACEHOLDERS", "package_summary", "placeholder_note", "register"]


def _write_json(value: Any, out: str | None) -> None:
    text = json.dumps(value, indent=2) + "\n"
    if out and out != "-":
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _limit(value: int | None) -> int | None:
    return None if value == 0 else value


#: The ``${Name}`` placeholders the ASL leaves for the template to fill:
#: what each stands for, what the template fills it with, and the `asl` flag
#: that fills it instead.
PLACEHOLDERS: dict[str, tuple[str, str, str]] = {
    "CsvRowsHandlerFunctionArn": (
        "the child Lambda's ARN",
        "Fn::GetAtt CsvRowsHandlerFunction.Arn",
        "--lambda-arn ARN",
    ),
    "ResultBucket": (
        "the bucket the Distributed Map's ResultWriter writes to",
        "the ResultBucketName parameter, or the bucket the stack creates",
        "--result-bucket NAME",
    ),
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_LAMBDA_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[\w$-]+)?$"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def placeholder_note(value: Any) -> str | None:
    """Which ``${...}`` placeholders ``value`` still holds, who fills them, how to by hand.

    None when there are none (every one was given on the command line).
    """
    found = sorted(set(_PLACEHOLDER.findall(json.dumps(value))))
    if not found:
        return None
    names = ", ".join("${" + n + "}" for n in found)
    lines = [
        f"importer asl: placeholders left in the definition: {names}",
        "  `importer template` fills them at deploy time (the state machine's "
        "DefinitionSubstitutions):",
    ]
    flags = []
    for name in found:
        what, filled, flag = PLACEHOLDERS.get(name, (name, "a DefinitionSubstitutions entry", ""))
        lines.append(f"    ${{{name}}} = {what} ({filled})")
        if flag:
            flags.append(flag)
    by_hand = f"pass {' '.join(flags)}, or " if flags else ""
    lines.append(
        f"  without that template: {by_hand}give these names in the DefinitionSubstitutions "
        "of your own AWS::StepFunctions::StateMachine"
    )
    return "\n".join(lines)


def _asl_substitutions(args: argparse.Namespace) -> dict[str, Any]:
    """--lambda-arn / --result-bucket, checked, as definition keywords."""
    out: dict[str, Any] = {}
    if args.lambda_arn is not None:
        if not _LAMBDA_ARN.match(args.lambda_arn):
            raise ValueError(
                f"--lambda-arn {args.lambda_arn!r} is not a Lambda function ARN "
                "(arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
            )
        out["lambda_arn"] = args.lambda_arn
    if args.result_bucket is not None:
        if not _BUCKET.match(args.result_bucket):
            raise ValueError(f"--result-bucket {args.result_bucket!r} is not an S3 bucket name")
        if args.machine not in ("import-csv", "all"):
            raise ValueError(f"--result-bucket applies to import-csv, not {args.machine}")
        out["result_bucket"] = args.result_bucket
    return out


def _reader_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ItemReader flags as `statemachine.reader_config` keywords."""
    return {
        "input_type": args.input_type,
        "max_items": args.max_items,
        "manifest_type": args.manifest_type,
        "data_type": args.data_type,
        "csv_headers": args.csv_headers.split(",") if args.csv_headers else None,
    }


def _cmd_asl(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        "max_items_per_batch": _limit(args.batch_items),
        "max_input_bytes_per_batch": _limit(args.batch_bytes),
        "max_concurrency": args.max_concurrency,
        "tolerated_failure_percentage": args.tolerated_failure_percentage,
        **_reader_options(args),
    }
    try:
        given = _asl_substitutions(args)
        if args.machine == "all":
            value: dict[str, Any] = statemachine.all_definitions(**options, **given)
        elif args.machine == "import-csv":
            value = statemachine.import_csv_definition(**options, **given)
        else:
            value = statemachine.definition(args.machine, **given)
    except (batching.BatchLimitError, ValueError) as exc:
        print(f"importer asl: {exc}", file=sys.stderr)
        return 2
    _write_json(value, args.out)
    note = placeholder_note(value)
    if note:
        print(note, file=sys.stderr)  # stdout stays the JSON alone
    return 0


def _cmd_template(args: argparse.Namespace) -> int:
    try:
        value = render_template(
            code_uri=args.code_uri,
            max_items_per_batch=_limit(args.batch_items),
            max_input_bytes_per_batch=_limit(args.batch_bytes),
            max_concurrency=args.max_concurrency,
            tolerated_failure_percentage=args.tolerated_failure_percentage,
            reader=_reader_options(args),
        )
    except (batching.BatchLimitError, PackageError, ValueError) as exc:
        print(f"importer template: {exc}", file=sys.stderr)
        return 2
    _write_json(value, args.out)
    return 0


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


def package_summary(path: Path, target: Target) -> str:
    """What `importer package` built, and the commands that deploy it."""
    with zipfile.ZipFile(path) as zf:
        files = len(zf.infolist())
    size = path.stat().st_size
    return "\n".join(
        [
            f"importer package: built {path} ({_size(size)}, {files} files): the importer "
            f"package with its compiled core for {target.runtime} on {target.architecture}, "
            f"handler {HANDLER}",
            "next, deploy it with the SAM template (rendered on this machine, so it names "
            "the same runtime and architecture):",
            f"  importer template --code-uri {path} --out template.json",
            "  sam deploy --template-file template.json --stack-name importer "
            "--capabilities CAPABILITY_IAM --resolve-s3 \\",
            "    --parameter-overrides TableName=ENV-APP-MODULE-command "
            "InputBucketName=BUCKET SpecS3Uri=s3://BUCKET/spec.toml Mode=insert",
            "or update a function already deployed:",
            f"  aws lambda update-function-code --function-name NAME --zip-file fileb://{path}",
        ]
    )


def _cmd_package(args: argparse.Namespace) -> int:
    target = build_target()
    try:
        path = build_package(Path(args.out), target=target)
    except PackageError as exc:
        print(f"importer package: {exc}", file=sys.stderr)
        return 2
    print(path)  # stdout: just the path, for scripts
    print(package_summary(path, target), file=sys.stderr)
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
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=50,
        metavar="N",
        help="the Map's MaxConcurrency: child Lambdas at once (default 50)",
    )
    parser.add_argument(
        "--input-type",
        choices=INPUT_TYPES,
        default="CSV",
        help="ItemReader InputType (default CSV): JSON, JSONL, PARQUET, MANIFEST",
    )
    parser.add_argument(
        "--max-items", type=int, default=None, metavar="N", help="ReaderConfig MaxItems"
    )
    parser.add_argument(
        "--manifest-type",
        choices=MANIFEST_TYPES,
        default="ATHENA_DATA",
        help="for --input-type MANIFEST: ATHENA_DATA (default) or S3_INVENTORY",
    )
    parser.add_argument(
        "--data-type",
        choices=("CSV", "JSONL", "PARQUET"),
        default=None,
        help="for an Athena data manifest: the type of the objects it lists",
    )
    parser.add_argument(
        "--csv-headers",
        default=None,
        metavar="A,B,...",
        help="CSVHeaders (header GIVEN), as an Athena CSV manifest needs",
    )
    parser.add_argument(
        "--tolerated-failure-percentage", type=float, default=5, metavar="P", help="0..100"
    )


def register(subparsers: Any) -> None:
    """Add ``asl``, ``template`` and ``package`` to the ``importer`` CLI."""
    asl = subparsers.add_parser(
        "asl", help="print the Amazon States Language of the state machines"
    )
    asl.add_argument(
        "--machine",
        choices=[*statemachine.MACHINES, "all"],
        default="import-csv",
        help="which state machine (default import-csv)",
    )
    asl.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    asl.add_argument(
        "--lambda-arn",
        metavar="ARN",
        help="fill ${CsvRowsHandlerFunctionArn} (default: left for the template to fill)",
    )
    asl.add_argument(
        "--result-bucket",
        metavar="NAME",
        help="fill ${ResultBucket} of import-csv (default: left for the template to fill)",
    )
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
    package.add_argument(
        "--out",
        default=DEFAULT_PACKAGE,
        metavar="PATH",
        help=f"where to write the zip (default {DEFAULT_PACKAGE}, where `template` looks)",
    )
    package.set_defaults(func=_cmd_package)

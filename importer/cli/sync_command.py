"""``importer sync``: apply the command records the data table has not seen, in bulk.

Exit codes follow the CLI's one rule (:func:`importer.cli.exit_codes.exit_code`): a command that
could not be applied is a row that needs a look (3), a missing table or an unreachable
endpoint is fatal (1), a bad option or handler path is a usage error (2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from importer.cli.exit_codes import EXIT_FATAL, EXIT_USAGE, exit_code
from importer.mbc.data_sync import load_handlers
from importer.mbc.model import Tables
from importer.mbc.sync import sync_tables

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``importer sync`` to the ``importer`` CLI."""
    p = subparsers.add_parser(
        "sync",
        help="apply command records the data table has not seen (the command state machine, "
        "in bulk)",
    )
    p.add_argument(
        "--table", required=True, help="the command table ({env}-{app}-{module}-command)"
    )
    p.add_argument("--data-table", metavar="NAME", help="default: the module's -data table")
    p.add_argument("--history-table", metavar="NAME", help="default: the module's -history table")
    p.add_argument("--prefix", metavar="P", help="table prefix {env}-{app}- (default: derived)")
    p.add_argument("--region", default=None, help="AWS region (default from the environment)")
    p.add_argument("--endpoint-url", default=None, help="DynamoDB endpoint (local stand-ins)")
    p.add_argument("--tz", default=None, help="time zone of written dates (default $TZ or UTC)")
    p.add_argument(
        "--handlers",
        default=None,
        metavar="PATHS",
        help="custom data-sync handlers, module:attr,... (default $IMPORTER_DATA_SYNC_HANDLERS)",
    )
    p.add_argument(
        "--status-topic-arn",
        default=None,
        metavar="ARN",
        help="publish each applied command's finish:FINISHED command-status message here",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_cmd_sync)


class _MissingTable(Exception):
    """A table sync reads or writes does not exist (said as every command says it)."""


def _require_tables(client: Any, names: Sequence[str], where: str, region: str) -> None:
    """Fail before the first Scan, naming the table, as `run` and `plan` do for the same typo
    (and the endpoint, when nothing answers there)."""
    from botocore.exceptions import EndpointConnectionError

    from importer.dynamodb.errors import missing_table_message, unreachable_message

    for name in names:
        try:
            client.describe_table(TableName=name)
        except client.exceptions.ResourceNotFoundException:
            raise _MissingTable(missing_table_message(name, where, region)) from None
        except EndpointConnectionError as exc:
            raise _MissingTable(unreachable_message(where, region, str(exc))) from None


def _cmd_sync(args: Any) -> int:

    import boto3

    from importer.dynamodb.region import default_region
    from importer.mbc.data_sync import DataSyncError
    from importer.mbc.model import local_tz

    region = default_region(args.region)
    where = args.endpoint_url or "AWS"
    try:
        tz = local_tz(args.tz)
        handlers = load_handlers(args.handlers)
        client = boto3.client("dynamodb", region_name=region, endpoint_url=args.endpoint_url)
        where = client.meta.endpoint_url
        tables = Tables.from_command_table(
            args.table, prefix=args.prefix, data=args.data_table, history=args.history_table
        )
        _require_tables(client, (tables.command, tables.data, tables.history), where, region)
        result = sync_tables(
            table=args.table,
            dynamodb=client,
            data_table=args.data_table,
            history_table=args.history_table,
            prefix=args.prefix,
            handlers=handlers,
            tz=tz,
            sns=boto3.client("sns", region_name=region) if args.status_topic_arn else None,
            status_topic_arn=args.status_topic_arn,
        )
    except _MissingTable as exc:
        print(f"importer: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except (DataSyncError, ValueError) as exc:
        print(f"importer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one readable line, never a traceback
        msg = " ".join(str(exc).split())
        print(
            f"importer: error: sync of table {args.table!r} at {where} (region {region}) "
            f"failed: {type(exc).__name__}: {msg}",
            file=sys.stderr,
        )
        return EXIT_FATAL
    data = result.to_json()
    failed = result.counts().failed
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(
            f"commands {data['commands_seen']:,}  entities {data['entities']:,}  "
            f"applied {data['applied']:,}  data {data['data_written']:,}  "
            f"history {data['history_written']:,}  commands written "
            f"{data['commands_written']:,}  failed {failed:,}"
            f"  {data['seconds']:.2f}s"
        )
    for f in result.handler_failures + result.failures:
        print(f"importer: failed: {f.pk} {f.sk}: {f.reason}", file=sys.stderr)
    return exit_code(result.counts())

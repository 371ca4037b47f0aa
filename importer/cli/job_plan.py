"""`importer plan` over several files: the job `importer run` would import, priced as one.

Each file is planned as `importer plan` plans one (read, batched, transformed
once, with its own spec when a job manifest gives one); the counts add up to
the job's, and its time and cost are those of the sum.  In AWS a job is one
task state machine execution, bounded by the machine's timeout (the seed's 15
minutes, the template's `TaskTimeoutSeconds`): a job whose write time alone
exceeds it would time out there, so the plan says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from importer.cli.options import batch_limits
from importer.cli.plan import (
    Plan,
    _cmd_plan,
    _duration,
    plan_file,
    plan_report,
    render,
)
from importer.dynamodb.region import default_region
from importer.run.job_files import expand_sources, is_multi_source, load_job_manifest
from importer.transform.spec import Spec, load_spec

__all__ = ["plan_job", "add_plans", "register"]


def add_plans(plans: list[Plan], *, batch_items: int | None) -> Plan:
    """The job's plan: every count the sum of its files' (`Plan.add`)."""
    total = Plan(source="job", batch_items=batch_items)
    for p in plans:
        total.add(p)
    return total


def plan_job(args: argparse.Namespace) -> int:
    batch_items, _ = batch_limits(args)
    s3_client = None
    if any(s.startswith("s3://") for s in args.sources):
        import boto3

        s3_client = boto3.client("s3", region_name=default_region(args.region))
    manifest = load_job_manifest(args.spec)
    specs: dict[str, Spec] = {}
    per_file: list[dict[str, Any]] = []
    plans: list[Plan] = []
    with tempfile.TemporaryDirectory(prefix="importer-plan-") as tmp:
        listed = expand_sources(list(args.sources), work_dir=Path(tmp), s3_client=s3_client)
        for source, name in listed:
            spec_path = manifest.pick(name).spec if manifest is not None else args.spec
            spec = specs.get(spec_path) or specs.setdefault(spec_path, load_spec(spec_path))
            plan = plan_file(args, source, spec, s3_client)
            plans.append(plan)
            per_file.append(
                {
                    "name": name,
                    "rows": plan.rows,
                    "items": plan.items,
                    "rejected": plan.rejected,
                    "write_units": plan.write_units,
                    "map_children": plan.map_children,
                }
            )
    # the TTL is read for the first file's spec (one table, one tenant rule per job)
    first = next(iter(specs.values()))
    report = plan_report(args, add_plans(plans, batch_items=batch_items), first)
    report["files"] = per_file
    report["task_timeout_seconds"] = args.task_timeout
    over = "seconds" in report and report["seconds"] > args.task_timeout
    report["exceeds_task_timeout"] = bool(over)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = len(str(len(per_file)))
        for i, f in enumerate(per_file, start=1):
            print(
                f"[{i:>{width}}/{len(per_file)}] {f['name']}  rows {f['rows']:,}  "
                f"items {f['items']:,}  rejected {f['rejected']:,}  "
                f"write units {f['write_units']:,}"
            )
        print(f"job             {len(per_file)} files, one task state machine execution in AWS")
        print(render(report))
    if over:
        print(
            f"importer: warning: the job's write time ({_duration(report['seconds'])}) exceeds "
            f"the task state machine's timeout ({_duration(args.task_timeout)}): in AWS its "
            "execution would time out. Deploy with a larger TaskTimeoutSeconds, raise the "
            "table's capacity, or split the job",
            file=sys.stderr,
        )
    return 0


def _cmd(args: argparse.Namespace) -> int:
    return plan_job(args) if is_multi_source(args.sources) else _cmd_plan(args)


def register(subparsers: Any) -> None:
    """Route `importer plan` with several sources here (after `importer.cli.plan.register`)."""
    subparsers.choices["plan"].set_defaults(func=_cmd)

"""The deployed function's role allows exactly the AWS calls its import mode makes.

For each mode (blind, insert, upsert, strict) the SAM template from
:func:`importer.aws.deploy.render_template` is resolved as CloudFormation would
resolve it for that stack (:class:`Stack`: parameters with their defaults and
allowed values, pseudo-parameters, conditions, Ref / Fn::Sub / Fn::If /
Fn::Select / Fn::Split / Fn::Join / Fn::GetAtt, ``AWS::NoValue``).  Then the
template's own state machine definition, with its ``DefinitionSubstitutions``,
runs on moto's Step Functions engine (:mod:`tests.sfn_shim`), and its Lambda
task calls :func:`importer.aws.handler.handle_event` in-process with the
function's resolved ``Environment`` and credentials of its own.

Every AWS call signed with those credentials is recorded at the botocore level
(``BaseClient._make_api_call``), whichever client or module makes it, as IAM
sees it: ``(service, operation, IAM action, resource ARN)``; a
TransactWriteItems becomes one ``dynamodb:PutItem`` per Put on that Put's
table.  The test then asks two questions of the resolved function policy:

* does it allow every recorded call?  (on AWS a refused call fails the child);
* is every grant used by some call?  (nothing broader than the mode needs: no
  action the mode never makes, no table or bucket it never touches, no ``*``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from importer.aws import deploy
from importer.aws.handler import handle_event
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC, scan_all
from tests.support.sfn_shim import MOTO_SFN_CONFIG, sfn_shim
from tests.test_stepfunctions_e2e import make_csv

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: the ARNs its tables live under
STACK = "importer-iam"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-CsvRowsHandler"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK}-import-csv"
# The function role's session: only calls signed with this key are the child's.
CHILD_KEY = "FAKEIMPORTERCHILDROLE"  # a test key id, not an AWS one
SETUP_KEY = "FAKEIMPORTERTESTSETUP"  # a test key id, not an AWS one
ROWS = 40
BAD_ROWS = {5: ("price", "-1"), 23: ("qty", "many")}  # so every mode writes rejects

# Per mode: the stack parameters besides the shared ones.  insert and upsert
# leave DataTableName empty (the -command -> -data default); strict names a
# data table that the default would not find.
MODE_PARAMETERS: dict[str, dict[str, str]] = {
    "blind": {"TableName": "iam-blind-command"},
    "insert": {"TableName": "iam-insert-command"},
    # upsert names its TTL configuration's table: the child reads it for the commands' ttl
    "upsert": {"TableName": "iam-upsert-command", "MasterDataTableName": "iam-master-data"},
    "strict": {"TableName": "iam-strict-command", "DataTableName": "iam-strict-latest"},
}
DATA_TABLES = {
    "insert": "iam-insert-data",
    "upsert": "iam-upsert-data",
    "strict": "iam-strict-latest",
}


# ------------------------------------------------------------- CloudFormation


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


class Stack:
    """A template resolved for one set of parameters, as CloudFormation resolves it.

    ``physical`` names what resources become: ``{"Logical": id}`` for ``Ref``
    and ``{"Logical.Attr": value}`` for ``Fn::GetAtt``.  Only the functions
    the importer's template uses are implemented; any other raises, so the
    resolver never silently passes a value through unresolved.
    """

    def __init__(
        self,
        template: dict[str, Any],
        parameters: dict[str, str],
        *,
        physical: dict[str, str],
        region: str = REGION,
        account: str = ACCOUNT,
        stack_name: str = STACK,
    ) -> None:
        self.template = template
        declared = template.get("Parameters", {})
        undeclared = set(parameters) - set(declared)
        if undeclared:
            raise ValueError(f"parameters the template does not declare: {sorted(undeclared)}")
        self.parameters: dict[str, str] = {}
        for name, decl in declared.items():
            if name in parameters:
                value = parameters[name]
            elif "Default" in decl:
                value = decl["Default"]
            else:
                raise ValueError(f"parameter {name} has no default and was not given")
            if "AllowedValues" in decl and value not in decl["AllowedValues"]:
                raise ValueError(f"{name}={value!r} is not one of {decl['AllowedValues']}")
            if "AllowedPattern" in decl and not re.fullmatch(decl["AllowedPattern"], value):
                raise ValueError(f"{name}={value!r} does not match {decl['AllowedPattern']}")
            self.parameters[name] = value
        self.pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::StackName": stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.physical = physical
        self._conditions: dict[str, bool] = {}

    # conditions
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self._truth(self.template["Conditions"][name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        ((fn, arg),) = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            left, right = (self.value(a) for a in arg)
            return left == right
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Fn::And":
            return all(self._truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self._truth(a) for a in arg)
        raise NotImplementedError(f"condition function {fn}")

    # values
    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.template["Resources"].get(name)
        if resource is None:
            raise KeyError(f"Ref to unknown {name}")
        if "Condition" in resource and not self.condition(resource["Condition"]):
            raise ValueError(f"Ref to {name}, which this stack does not create")
        return self.physical[name]

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.value(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self.physical[name])
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self._ref(arg)
            if fn == "Fn::GetAtt":
                resource, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.physical[f"{resource}.{attr}"]
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return self._sub(text, variables)
            if fn == "Fn::If":
                cond, yes, no = arg
                return self.value(yes if self.condition(cond) else no)
            if fn == "Fn::Select":
                index, items = arg
                items = self.value(items)
                return items[int(self.value(index))]
            if fn == "Fn::Split":
                sep, text = arg
                return str(self.value(text)).split(sep)
            if fn == "Fn::Join":
                sep, items = arg
                return sep.join(str(v) for v in self.value(items))
            if fn.startswith("Fn::") or fn == "Condition":
                raise NotImplementedError(f"intrinsic {fn}")
        out = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def resource(self, logical_id: str) -> dict[str, Any]:
        return self.value(self.template["Resources"][logical_id])


# ------------------------------------------------------------------------ IAM


@dataclass(frozen=True, slots=True)
class Request:
    """One AWS call as IAM authorises it."""

    service: str
    operation: str
    action: str
    resource: str


def _matches(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM wildcard matching: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def policy_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The Allow statements, refusing anything this simple evaluator cannot judge."""
    statements = policy["Statement"]
    for st in statements:
        unsupported = set(st) - {"Sid", "Effect", "Action", "Resource"}
        assert not unsupported, f"evaluator does not handle {unsupported} in {st}"
        assert st["Effect"] == "Allow", st
    return statements


def allows(policy: dict[str, Any], request: Request) -> bool:
    return any(
        any(_matches(a, request.action, case=False) for a in st["Action"])
        and any(_matches(r, request.resource) for r in st["Resource"])
        for st in policy_statements(policy)
    )


def grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource pattern) the policy allows."""
    return {
        (a, r) for st in policy_statements(policy) for a in st["Action"] for r in st["Resource"]
    }


def _table_arn(name: str, region: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"


# TransactWriteItems / TransactGetItems have no IAM action of their own: each
# element is authorised as its single-item counterpart (DynamoDB Developer Guide,
# "Using IAM with DynamoDB transactions").
_TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}
_S3_OBJECT_ACTIONS = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject"}
_S3_OBJECT_ACTIONS |= {"PutObject": "s3:PutObject"}


def iam_requests(
    service: str, operation: str, params: dict[str, Any], region: str
) -> list[Request]:
    """What IAM checks for one API call; an operation not mapped here fails loudly."""
    if service == "dynamodb":
        if operation in ("TransactWriteItems", "TransactGetItems"):
            out = []
            for element in params["TransactItems"]:
                ((kind, body),) = element.items()
                arn = _table_arn(body["TableName"], region)
                out.append(Request(service, operation, _TRANSACT_ACTIONS[kind], arn))
            return out
        if "RequestItems" in params:  # BatchGetItem, BatchWriteItem
            return [
                Request(service, operation, f"dynamodb:{operation}", _table_arn(t, region))
                for t in params["RequestItems"]
            ]
        if "TableName" in params:
            arn = _table_arn(params["TableName"], region)
            return [Request(service, operation, f"dynamodb:{operation}", arn)]
    if service == "s3" and operation in _S3_OBJECT_ACTIONS:
        arn = f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
        return [Request(service, operation, _S3_OBJECT_ACTIONS[operation], arn)]
    raise AssertionError(f"no IAM mapping for {service}:{operation} {sorted(params)}")


class CallRecorder:
    """Every botocore API call signed with ``access_key``, as IAM requests.

    Patched in at ``BaseClient._make_api_call``: every boto3 client goes
    through it (moto intercepts later, at send), so it does not matter which
    module or thread of the handler makes the call.
    """

    def __init__(self, access_key: str) -> None:
        self.access_key = access_key
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        recorder = self

        def _make_api_call(client: BaseClient, operation_name: str, api_params: dict) -> Any:
            creds = getattr(client._request_signer, "_credentials", None)
            if creds is not None and creds.access_key == recorder.access_key:
                service = client.meta.service_model.endpoint_prefix
                found = iam_requests(service, operation_name, api_params, client.meta.region_name)
                with recorder._lock:
                    recorder.requests.extend(found)
            return original(client, operation_name, api_params)

        return _make_api_call


# ------------------------------------------------------------------ the runs


def physical_ids() -> dict[str, str]:
    return {
        deploy.FUNCTION_ID: f"{STACK}-CsvRowsHandler",
        f"{deploy.FUNCTION_ID}.Arn": FUNCTION_ARN,
        deploy.STATE_MACHINE_ID: STATE_MACHINE_ARN,
        deploy.RESULT_BUCKET_ID: "created-results",
    }


def stack_for(mode: str) -> Stack:
    parameters = {
        "Mode": mode,
        "InputBucketName": "inbox",
        "SpecS3Uri": f"s3://import-config/spec-{mode}.toml",
        "ResultBucketName": "results",
        **MODE_PARAMETERS[mode],
    }
    # One child at a time: moto's TransactWriteItems deep-copies a table that a
    # concurrent child may be writing ("dictionary changed size during iteration").
    # Concurrency changes no call the child makes.
    template = deploy.render_template(max_concurrency=1)
    # a template without a parameter gets none (lets this test run against older ones)
    parameters = {k: v for k, v in parameters.items() if k in template["Parameters"]}
    return Stack(template, parameters, physical=physical_ids())


def function_policy(stack: Stack) -> dict[str, Any]:
    [policy] = stack.resource(deploy.FUNCTION_ID)["Properties"]["Policies"]
    return policy


def machine_definition(stack: Stack) -> str:
    """The state machine's Definition after its DefinitionSubstitutions."""
    props = stack.template["Resources"][deploy.STATE_MACHINE_ID]["Properties"]
    text = json.dumps(props["Definition"])
    for name, node in props["DefinitionSubstitutions"].items():
        text = text.replace("${" + name + "}", str(stack.value(node)))
    assert "${" not in text, text
    return text


@pytest.fixture(scope="module")
def cloud() -> Iterator[dict[str, Any]]:
    from moto import mock_aws

    with mock_aws(config=MOTO_SFN_CONFIG):
        setup = boto3.Session(
            aws_access_key_id=SETUP_KEY, aws_secret_access_key="setup", region_name=REGION
        )
        s3, ddb = setup.client("s3"), setup.client("dynamodb")
        for bucket in ("inbox", "import-config", "results"):
            s3.create_bucket(Bucket=bucket)
        body, _ = make_csv(ROWS, BAD_ROWS)
        s3.put_object(Bucket="inbox", Key="products.csv", Body=body)
        for mode, params in MODE_PARAMETERS.items():
            s3.put_object(Bucket="import-config", Key=f"spec-{mode}.toml", Body=PRODUCT_SPEC)
            ddb.create_table(TableName=params["TableName"], **KEY_SCHEMA)
        for mode, table in DATA_TABLES.items():
            ddb.create_table(TableName=table, **KEY_SCHEMA)
            seed_existing_entity(ddb, MODE_PARAMETERS[mode]["TableName"], table)
        ddb.create_table(TableName="iam-master-data", **KEY_SCHEMA)
        ddb.put_item(
            TableName="iam-master-data",
            Item={
                "pk": {"S": "MASTER#acme"},
                "sk": {"S": "TTL#iam-upsert-data"},
                "attributes": {"M": {"days": {"N": "10"}}},
            },
        )
        yield {"s3": s3, "ddb": ddb, "sfn": setup.client("stepfunctions")}


def seed_existing_entity(ddb: Any, command_table: str, data_table: str) -> None:
    """SKU-00002 exists at version 1: insert refuses it, upsert/strict write version 2."""
    item = {
        "pk": {"S": "PRODUCT#acme"},
        "sk": {"S": "PRODUCT#SKU-00002@1"},
        "version": {"N": "1"},
        "code": {"S": "SKU-00002"},
        "name": {"S": "an older name"},
        "type": {"S": "PRODUCT"},
        "tenantCode": {"S": "acme"},
        "attributes": {"M": {}},
        "requestId": {"S": "an-earlier-import#1"},
    }
    ddb.put_item(TableName=command_table, Item=item)
    ddb.put_item(TableName=data_table, Item={**item, "sk": {"S": "PRODUCT#SKU-00002"}})


def run_child_calls(
    cloud: dict[str, Any], stack: Stack, mode: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[Request]]:
    """Run the template's machine on `products.csv`; return (describe, the child's calls)."""
    fn = stack.resource(deploy.FUNCTION_ID)["Properties"]
    for name in [n for n in os.environ if n.startswith("IMPORTER_")]:
        monkeypatch.delenv(name)  # the function's environment is the template's alone
    for name, value in fn["Environment"]["Variables"].items():
        monkeypatch.setenv(name, str(value))
    # The function's own credentials; clients made from here on sign with them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CHILD_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "child-secret")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    recorder = CallRecorder(CHILD_KEY)
    monkeypatch.setattr(BaseClient, "_make_api_call", recorder.wrap(BaseClient._make_api_call))

    def csv_rows_handler(event: Any) -> Any:
        # The Lambda's own pipeline, but on the boto3 client so that moto serves it (the
        # deployed default, the signed-HTTP client, bypasses botocore).
        return handle_event(event, writer="boto3", engine="native")

    sfn = cloud["sfn"]
    name = f"{STACK}-{mode}"
    with sfn_shim({FUNCTION_ARN: csv_rows_handler}):
        arn = sfn.create_state_machine(
            name=name,
            definition=machine_definition(stack),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/x",
        )["stateMachineArn"]
        execution = sfn.start_execution(
            stateMachineArn=arn,
            name=f"{name}-run",
            input=json.dumps({"bucket": "inbox", "key": "products.csv"}),
        )["executionArn"]
        deadline = time.monotonic() + 120
        while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "execution did not finish"
            time.sleep(0.05)
    return desc, recorder.requests


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[Stack, dict[str, Any], list[Request]]]:
    return {}


def run_mode(cloud, runs, monkeypatch, mode: str):
    if mode not in runs:
        stack = stack_for(mode)
        desc, requests = run_child_calls(cloud, stack, mode, monkeypatch)
        runs[mode] = (stack, desc, requests)
    return runs[mode]


# ------------------------------------------------------------------- tests


MODES = ("blind", "insert", "upsert", "strict")


@pytest.mark.parametrize("mode", MODES)
def test_the_function_role_allows_every_call_of_its_mode(cloud, runs, monkeypatch, mode):
    stack, desc, requests = run_mode(cloud, runs, monkeypatch, mode)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    # the run imported in the template's mode: the seeded SKU-00002 is left alone by
    # insert, gets version 2 from upsert and strict (blind has no seed)
    table = scan_all(MODE_PARAMETERS[mode]["TableName"], client=cloud["ddb"])
    seeded = table.get(("PRODUCT#acme", "PRODUCT#SKU-00002@1"), {}).get("requestId")
    second = ("PRODUCT#acme", "PRODUCT#SKU-00002@2") in table
    good = ROWS - len(BAD_ROWS)
    if mode == "blind":
        assert len(table) == good and seeded != {"S": "an-earlier-import#1"}
    elif mode == "insert":
        assert len(table) == good and seeded == {"S": "an-earlier-import#1"} and not second
    else:
        assert len(table) == good + 1 and seeded == {"S": "an-earlier-import#1"} and second
    # the commands' ttl: the data table's TTL configuration where the stack names its table
    ttls = {
        json.dumps(it["ttl"])
        for it in table.values()
        if it.get("requestId", {}).get("S", "") != "an-earlier-import#1"
    }
    assert len(ttls) == 1
    assert ("NULL" in ttls.pop()) == ("MasterDataTableName" not in MODE_PARAMETERS[mode])
    assert requests, "the child made no AWS call at all"
    policy = function_policy(stack)
    refused = sorted({(r.action, r.resource) for r in requests if not allows(policy, r)})
    assert not refused, (
        f"{mode}: the function role refuses calls the child makes:\n"
        + "\n".join(f"  {a} on {res}" for a, res in refused)
        + f"\npolicy: {json.dumps(policy, indent=1)}"
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_function_role_grants_nothing_its_mode_does_not_use(cloud, runs, monkeypatch, mode):
    stack, _, requests = run_mode(cloud, runs, monkeypatch, mode)
    policy = function_policy(stack)
    for action, resource in grants(policy):
        assert "*" not in action and "?" not in action, action
        assert resource != "*" and not resource.endswith(":*"), resource
        if resource.startswith("arn:aws:dynamodb:"):
            assert "*" not in resource and "?" not in resource, resource
        if resource.startswith("arn:aws:s3:::"):  # a key prefix may end in *, nothing else
            assert "*" not in resource[:-1] and "?" not in resource, resource
    unused = sorted(
        (action, resource)
        for action, resource in grants(policy)
        if not any(
            _matches(action, r.action, case=False) and _matches(resource, r.resource)
            for r in requests
        )
    )
    assert not unused, f"{mode}: granted but never used: {unused}"


@pytest.mark.parametrize("mode", MODES)
def test_the_child_calls_are_the_documented_grants(cloud, runs, monkeypatch, mode):
    """deploy.MODE_GRANTS (what the template is built from) is what the child does."""
    stack, _, requests = run_mode(cloud, runs, monkeypatch, mode)
    command = _table_arn(MODE_PARAMETERS[mode]["TableName"], REGION)
    data = _table_arn(DATA_TABLES[mode], REGION) if mode in DATA_TABLES else None
    seen = {
        "command": {r.action for r in requests if r.resource == command},
        "data": {r.action for r in requests if r.resource == data},
    }
    expected = {t: set(a) for t, a in deploy.MODE_GRANTS[mode].items()}
    assert seen == expected
    other = {
        (r.action, r.resource)
        for r in requests
        if r.service == "dynamodb" and r.resource not in (command, data)
    }
    master = MODE_PARAMETERS[mode].get("MasterDataTableName")
    if master:  # the TTL configuration, read once per run (and container)
        assert other == {("dynamodb:GetItem", _table_arn(master, REGION))}
    else:
        assert not other, f"{mode}: calls on other tables: {other}"
    s3 = {(r.action, r.resource.rsplit("/", 1)[0]) for r in requests if r.service == "s3"}
    assert ("s3:GetObject", "arn:aws:s3:::import-config") in s3  # the spec
    assert any(a == "s3:PutObject" and "results/import-rejects" in res for a, res in s3)


def test_the_template_declares_mode_and_data_table():
    from importer.modes.stage import MODES

    assert tuple(deploy.MODE_GRANTS) == MODES  # one grant entry per import mode
    params = deploy.render_template()["Parameters"]
    assert params["Mode"]["AllowedValues"] == ["insert", "upsert", "strict", "blind"]
    assert params["Mode"]["Default"] == "insert"
    assert params["DataTableName"]["Default"] == ""


@pytest.mark.parametrize(
    ("table", "data_table", "expected"),
    [
        ("dev-app-master-command", "", "dev-app-master-data"),
        ("a-command-b-command", "", "a-command-b-data"),  # only the trailing one
        ("dev-app-master-command", "elsewhere", "elsewhere"),
        ("plain", "", None),  # no -command suffix: no data table
    ],
)
def test_the_data_table_default_is_the_handlers(table, data_table, expected):
    from importer.modes.stage import default_data_table

    stack = Stack(
        deploy.render_template(),
        {
            "TableName": table,
            "DataTableName": data_table,
            "InputBucketName": "inbox",
            "SpecS3Uri": "s3://cfg/spec.toml",
        },
        physical=physical_ids(),
    )
    assert (data_table or default_data_table(table)) == expected
    env = stack.resource(deploy.FUNCTION_ID)["Properties"]["Environment"]["Variables"]
    # not given: the handler derives it (importer.modes.stage.default_data_table)
    assert env.get("IMPORTER_DATA_TABLE") == (data_table or None)
    assert env["IMPORTER_MODE"] == "insert"
    arns = {r for st in function_policy(stack)["Statement"] for r in st["Resource"]}
    tables = {a.rsplit("table/", 1)[1] for a in arns if ":table/" in a}
    if expected is None:  # the derived name can name no table ('#' is not allowed)
        assert tables - {table} == {f"{table}#-data"}
        assert not re.fullmatch(r"[a-zA-Z0-9_.-]{3,255}", f"{table}#-data")
    else:
        assert tables == {table, expected}


def test_matching_follows_iam_wildcards():
    assert _matches("arn:aws:s3:::b/p/*", "arn:aws:s3:::b/p/x/y.csv")
    assert not _matches("arn:aws:s3:::b/p/*", "arn:aws:s3:::b/q/x")
    assert _matches("dynamodb:batchgetitem", "dynamodb:BatchGetItem", case=False)
    assert not _matches("arn:aws:dynamodb:r:1:table/t", "arn:aws:dynamodb:r:1:table/t-data")
    assert _matches("a[b]", "a[b]")

"""Every spec type and rule, valid and invalid, through the reference transform."""

from __future__ import annotations

import json

import pytest

from importer.transform.context import RunContext
from importer.transform.reference import transform_batch
from importer.transform.spec import SpecError, check_header, header_problem, load_spec, parse_spec

CTX = RunContext(run_id="run1", timestamp="2026-01-02T03:04:05+09:00", source="import-csv:run1")


def spec_with(column: dict, target: dict | None = None, **record) -> object:
    rec = {"type": "PRODUCT", "code": "{code}", **record}
    doc = {"record": rec, "columns": {"code": {"required": True}, "v": column}}
    if target is not None:
        doc["target"] = target
    return parse_spec(doc)


def one(spec, value: str, code: str = "A1"):
    result = transform_batch(spec, ["code", "v"], [(2, [code, value])], CTX)
    if result.rejects:
        assert not result.items
        return ("reject", result.rejects[0])
    item = json.loads(result.items[0].wire)
    return ("ok", item["attributes"]["M"].get("v"))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ({"type": "string"}, 'héllo "x" 😀', {"S": 'héllo "x" 😀'}),
        ({"type": "string"}, "", None),
        ({"type": "integer"}, " 0042 ", {"N": "42"}),
        ({"type": "integer"}, "-0", {"N": "0"}),
        ({"type": "integer"}, "+7", {"N": "7"}),
        ({"type": "decimal"}, "1.50", {"N": "1.5"}),
        ({"type": "decimal"}, "1e3", {"N": "1000"}),
        ({"type": "decimal"}, "-.25", {"N": "-0.25"}),
        ({"type": "boolean"}, "Yes", {"BOOL": True}),
        ({"type": "boolean"}, "0", {"BOOL": False}),
        ({"type": "boolean"}, "F", {"BOOL": False}),
        ({"type": "date"}, "2024/02/29", {"S": "2024-02-29"}),
        ({"type": "datetime"}, "2024-01-02 03:04", {"S": "2024-01-02T03:04:00+00:00"}),
        ({"type": "datetime"}, "2024-01-02T03:04:05.5Z", {"S": "2024-01-02T03:04:05.5+00:00"}),
        ({"type": "datetime"}, "2024-01-02T03:04:05-0530", {"S": "2024-01-02T03:04:05-05:30"}),
        (
            {"type": "json"},
            '{"a": [1, 2.50, null, true]}',
            {"M": {"a": {"L": [{"N": "1"}, {"N": "2.5"}, {"NULL": True}, {"BOOL": True}]}}},
        ),
        ({"type": "json"}, "[]", {"L": []}),
        ({"type": "string", "pattern": "^[a-z]+$"}, "abc", {"S": "abc"}),
        ({"type": "string", "enum": ["x", "y"]}, "y", {"S": "y"}),
        ({"type": "string", "min_length": 2, "max_length": 3}, "😀😀😀", {"S": "😀😀😀"}),
        ({"type": "integer", "min": 1, "max": 10}, "10", {"N": "10"}),
        ({"type": "integer", "enum": [1, 2]}, "02", {"N": "2"}),
        ({"type": "decimal", "min": 0}, "0.00", {"N": "0"}),
        (
            {"type": "date", "min": "2020-01-01", "max": "2020-12-31"},
            "2020-06-01",
            {"S": "2020-06-01"},
        ),
    ],
)
def test_valid_values(column, value, expected):
    assert one(spec_with(column), value) == ("ok", expected)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ({"type": "string", "required": True}, "", "required value is empty"),
        ({"type": "integer", "required": True}, "  ", "required value is empty"),
        ({"type": "integer"}, "1.0", "not an integer"),
        ({"type": "integer"}, "1" * 39, "significant digits"),
        ({"type": "decimal"}, "NaN", "not a decimal number"),
        ({"type": "decimal"}, "Infinity", "not a decimal number"),
        ({"type": "decimal"}, "1e126", "out of DynamoDB's range"),
        ({"type": "decimal"}, "1e-131", "out of DynamoDB's range"),
        ({"type": "decimal"}, "12,5", "not a decimal number"),
        ({"type": "boolean"}, "maybe", "not a boolean"),
        ({"type": "date"}, "2023-02-29", "not a date"),
        ({"type": "date"}, "02/03/2024", "not a date"),
        ({"type": "datetime"}, "2024-01-02T25:00", "out of range"),
        ({"type": "datetime"}, "yesterday", "not an ISO 8601"),
        ({"type": "json"}, "{bad", "invalid JSON"),
        ({"type": "json"}, "42", "expected a JSON object or array"),
        ({"type": "json"}, '{"x": NaN}', "invalid JSON"),
        ({"type": "string", "pattern": "^[a-z]+$"}, "ABC", "does not match pattern"),
        ({"type": "string", "enum": ["x", "y"]}, "z", "not one of the allowed values: x, y"),
        ({"type": "string", "min_length": 2}, "a", "shorter than min_length 2"),
        ({"type": "string", "max_length": 2}, "abc", "longer than max_length 2"),
        ({"type": "integer", "min": 1}, "0", "less than min 1"),
        ({"type": "decimal", "max": 1.5}, "1.51", "greater than max 1.5"),
        ({"type": "integer", "enum": [1, 3]}, "2", "not one of the allowed values: 1, 3"),
        ({"type": "date", "max": "2020-12-31"}, "2021-01-01", "after max 2020-12-31"),
    ],
)
def test_invalid_values_are_rejected_with_column_and_reason(column, value, reason):
    kind, reject = one(spec_with(column), value)
    assert kind == "reject"
    assert (reject.line, reject.column, reject.value) == (2, "v", value)
    assert reason in reject.reason
    assert reject.row == ("A1", value)


MBC_EDGES = [
    # (type, value, an MBC application reads it exactly)
    ("integer", "9007199254740991", True),
    ("integer", "-9007199254740991", True),
    ("integer", "9007199254740992", False),
    ("integer", "-9007199254740992", False),
    ("integer", "12345678901234567890", False),
    ("decimal", "12345678901234567890.5", False),
    ("decimal", "1.234567890123456789012345", False),
    ("decimal", "123456789012345", True),
    ("decimal", "0.123456789012345", True),
    ("decimal", "0.1234567890123456", False),
    ("decimal", "1234567890123456", True),  # an integer below 2^53: exact
    ("decimal", "1e20", False),  # integral, 1 digit, but a BigInt once read
    ("decimal", "19.99", True),
]


@pytest.mark.parametrize("engine", ["reference", "native"])
@pytest.mark.parametrize(("ctype", "value", "ok"), MBC_EDGES)
def test_an_mbc_target_rejects_numbers_javascript_cannot_hold(engine, ctype, value, ok):
    from importer.transform import native_engine

    fn = transform_batch if engine == "reference" else native_engine.transform_batch
    for target, expect_ok in ((None, ok), ({"numbers": "dynamodb"}, True)):
        spec = spec_with({"type": ctype}, target=target)
        result = fn(spec, ["code", "v"], [(2, ["A1", value])], CTX)
        if expect_ok:
            assert not result.rejects, result.rejects
        else:
            (reject,) = result.rejects
            assert (reject.line, reject.column, reject.value) == (2, "v", value)
            assert "MBC application cannot read exactly" in reject.reason
            assert '[target] numbers = "dynamodb"' in reject.reason


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_json_columns_follow_the_same_number_rule(engine):
    from importer.transform import native_engine

    fn = transform_batch if engine == "reference" else native_engine.transform_batch
    big = '{"id": 12345678901234567890, "tags": [1, 2]}'
    nested = '{"p": {"q": [0.1, 12345678901234567.5]}}'
    fine = '{"id": 9007199254740991, "p": {"q": [0.1, 19.99]}}'
    spec = spec_with({"type": "json"})
    result = fn(spec, ["code", "v"], [(2, ["A", big]), (3, ["B", nested]), (4, ["C", fine])], CTX)
    assert [r.line for r in result.rejects] == [2, 3]
    assert result.rejects[0].reason.startswith("JSON number 12345678901234567890: ")
    assert '[target] numbers = "dynamodb"' in result.rejects[1].reason
    assert len(result.items) == 1
    full = spec_with({"type": "json"}, target={"numbers": "dynamodb"})
    result = fn(full, ["code", "v"], [(2, ["A", big]), (3, ["B", nested])], CTX)
    assert not result.rejects
    attrs = json.loads(result.items[0].wire)["attributes"]["M"]["v"]["M"]
    assert attrs["id"] == {"N": "12345678901234567890"}


def test_target_options_are_checked():
    with pytest.raises(SpecError, match="target.numbers"):
        spec_with({"type": "integer"}, target={"numbers": "js"})
    with pytest.raises(SpecError, match="target.update"):
        spec_with({"type": "integer"}, target={"update": "overwrite"})
    with pytest.raises(SpecError, match="target"):
        spec_with({"type": "integer"}, target={"ttl": 3})
    spec = spec_with({"type": "integer"})
    assert (spec.numbers, spec.update, spec.name_given) == ("mbc", "merge", False)


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_the_command_carries_the_run_ttl(engine):
    from importer.transform import native_engine

    fn = transform_batch if engine == "reference" else native_engine.transform_batch
    ctx = RunContext(run_id="r", timestamp="2026-01-02T03:04:05+00:00", source="s", ttl=1775000000)
    result = fn(spec_with({"type": "integer"}), ["code", "v"], [(2, ["A1", "5"])], ctx)
    assert json.loads(result.items[0].wire)["ttl"] == {"N": "1775000000"}


def test_record_shape_is_exact_mbc():
    spec = spec_with({"type": "integer", "attribute": "count"}, tenant="{code}", name="N-{code}")
    result = transform_batch(spec, ["code", "v"], [(7, ["X9", "5"])], CTX)
    item = json.loads(result.items[0].wire)
    assert item == {
        "pk": {"S": "PRODUCT#X9"},
        "sk": {"S": "PRODUCT#X9@1"},
        "id": {"S": "PRODUCT#X9#PRODUCT#X9"},
        "code": {"S": "X9"},
        "name": {"S": "N-X9"},
        "type": {"S": "PRODUCT"},
        "tenantCode": {"S": "X9"},
        "version": {"N": "1"},
        "attributes": {"M": {"code": {"S": "X9"}, "count": {"N": "5"}}},
        "ttl": {"NULL": True},  # the framework writes null without a TTL configuration
        "source": {"S": "import-csv:run1"},
        "requestId": {"S": "run1#7"},
        "createdAt": {"S": "2026-01-02T03:04:05+09:00"},
        "updatedAt": {"S": "2026-01-02T03:04:05+09:00"},
        "createdBy": {"S": "importer"},
        "updatedBy": {"S": "importer"},
    }
    assert (result.items[0].pk, result.items[0].sk) == ("PRODUCT#X9", "PRODUCT#X9@1")


def test_default_tenant_is_single_and_output_is_deterministic():
    spec = spec_with({"type": "string"})
    a = transform_batch(spec, ["code", "v"], [(2, ["A", "x"])], CTX)
    b = transform_batch(spec, ["code", "v"], [(2, ["A", "x"])], CTX)
    assert a.items[0].wire == b.items[0].wire
    assert a.items[0].pk == "PRODUCT#single"


def test_attribute_false_keeps_column_out_of_attributes():
    spec = spec_with({"type": "string", "attribute": False})
    item = json.loads(transform_batch(spec, ["code", "v"], [(2, ["A", "x"])], CTX).items[0].wire)
    assert "v" not in item["attributes"]["M"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "required value is empty"),
        ("a@b", "must not contain '@'"),
        ("x" * 1100, "sort key is over"),
    ],
)
def test_key_problems_are_rejects(code, reason):
    kind, reject = one(spec_with({"type": "string"}), "v", code=code)
    assert kind == "reject" and reason in reject.reason and reject.column == "code"


def test_oversized_item_is_rejected():
    kind, reject = one(spec_with({"type": "string"}), "x" * (401 * 1024))
    assert kind == "reject" and "400 KB" in reject.reason


def test_duplicate_keys_last_row_wins_and_earlier_is_reported():
    """The transform keeps both; the batch unit settles them (blind mode: last row wins)."""
    from importer.run.batch_steps import resolve_duplicates

    spec = spec_with({"type": "string"})
    rows = [(2, ["A", "1"]), (3, ["A", "2"])]
    result = transform_batch(spec, ["code", "v"], rows, CTX)
    assert [i.line for i in result.items] == [2, 3] and result.rejects == []
    kept, dupes = resolve_duplicates(result.items, code_column="code", fields=dict(rows))
    assert [i.line for i in kept] == [3]
    [dupe] = dupes
    assert (dupe.line, dupe.column, dupe.value, dupe.row) == (2, "code", "A", ("A", "1"))
    assert "duplicate of line 3" in dupe.reason


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"columns": {"a": {}}}, "record.type: missing"),
        ({"record": {"type": "P"}, "columns": {"a": {}}}, "record.code: missing"),
        ({"record": {"type": "P", "code": "X"}, "columns": {"a": {}}}, "record.code: must use"),
        ({"record": {"type": "P", "code": "{a"}, "columns": {"a": {}}}, "unbalanced"),
        ({"record": {"type": "P", "code": "{a}"}, "columns": {}}, "at least one column"),
        (
            {"record": {"type": "P", "code": "{a}"}, "columns": {"a": {"type": "money"}}},
            "columns.a.type: unknown type 'money'",
        ),
        (
            {"record": {"type": "P", "code": "{a}"}, "columns": {"a": {"pattern": "("}}},
            "columns.a.pattern: invalid regular expression",
        ),
        (
            {
                "record": {"type": "P", "code": "{a}"},
                "columns": {"a": {"type": "boolean", "min": 1}},
            },
            "columns.a.min: not a rule for type 'boolean'",
        ),
        (
            {"record": {"type": "P", "code": "{a}"}, "columns": {"a": {"requird": True}}},
            "columns.a: unknown key 'requird'",
        ),
        (
            {"record": {"type": "P", "code": "{a}"}, "columns": {"a": {"min_length": -1}}},
            "columns.a.min_length",
        ),
        (
            {
                "record": {"type": "P", "code": "{a}"},
                "columns": {"a": {"type": "integer", "min": 5, "max": 1}},
            },
            "min 5 is greater than max 1",
        ),
        (
            {
                "record": {"type": "P", "code": "{a}"},
                "columns": {"a": {}},
                "csv": {"delimiter": "#"},
            },
            "csv.delimiter",
        ),
        (
            {
                "record": {"type": "P", "code": "{a}"},
                "columns": {"a": {}},
                "csv": {"header": "GIVEN"},
            },
            "csv.headers",
        ),
        (
            {"record": {"type": "P", "code": "{a}"}, "columns": {"a": {}}, "extra": 1},
            "spec: unknown key 'extra'",
        ),
    ],
)
def test_bad_specs_name_the_key_and_problem(doc, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_spec(doc)


def test_load_spec_toml_json_and_errors(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('[record]\ntype="P"\ncode="{a}"\n[columns.a]\nrequired=true\n')
    assert load_spec(toml).columns[0].required
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"record": {"type": "P", "code": "{a}"}, "columns": {"a": {}}}))
    assert load_spec(js).record.code.columns == ("a",)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[record\n")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(bad)


def test_enum_reason_lists_the_allowed_values_and_cuts_a_long_list():
    spec = spec_with({"type": "string", "enum": ["acme", "globex"]})
    assert one(spec, "initech")[1].reason == "not one of the allowed values: acme, globex"
    many = [f"tenant-{i:03d}" for i in range(40)]
    reason = one(spec_with({"type": "string", "enum": many}), "nope")[1].reason
    shown = reason.removeprefix("not one of the allowed values: ")
    assert shown.startswith("tenant-000, tenant-001, ")
    kept = shown.split(", ... ")[0].split(", ")
    assert shown.endswith(f", ... ({40 - len(kept)} more)")
    assert kept == many[: len(kept)] and 3 <= len(kept) < 40
    assert len(reason) < 160
    # values a plain comma list would hide are quoted
    odd = one(spec_with({"type": "string", "enum": ["a b", "x,y", ""]}), "q")[1].reason
    assert odd == 'not one of the allowed values: "a b", "x,y", ""'
    # one enormous value is cut, never the whole reason dropped
    huge = one(spec_with({"type": "string", "enum": ["z" * 500]}), "q")[1].reason
    assert huge.startswith("not one of the allowed values: zzz") and huge.endswith("...")
    assert len(huge) < 130


def test_template_typo_is_reported_as_a_placeholder_with_its_key():
    spec = parse_spec(
        {
            "record": {"type": "P", "code": "{idd}", "name": "{name}"},
            "columns": {"id": {"required": True}, "name": {}},
        }
    )
    problem = header_problem(spec, ["id", "name", "price"])
    assert problem == (
        "record.code: placeholder {idd} names no CSV column and no spec column "
        "(did you mean {id}? header: id, name, price)"
    )
    with pytest.raises(SpecError, match=r"^record\.code: placeholder \{idd\}"):
        check_header(spec, ["id", "name", "price"])
    # a placeholder naming a CSV column outside the spec is fine (it feeds the template only)
    assert header_problem(spec, ["id", "name", "idd"]) is None
    # a declared spec column missing from the header is a different mistake
    assert header_problem(spec, ["idx", "name", "idd"]) == (
        "columns.id: spec column 'id' is not in the CSV header "
        "(did you mean 'idx'? header: idx, name, idd)"
    )
    tenant = parse_spec(
        {"record": {"type": "P", "code": "{id}", "tenant": "{tenat}"}, "columns": {"id": {}}}
    )
    assert header_problem(tenant, ["id", "tenant"]).startswith(
        "record.tenant: placeholder {tenat} names no CSV column and no spec column "
        "(did you mean {tenant}?"
    )


def test_template_typo_is_caught_at_spec_check_time_with_given_headers():
    doc = {
        "record": {"type": "P", "code": "{idd}"},
        "columns": {"id": {}},
        "csv": {"header": "GIVEN", "headers": ["id", "name"]},
    }
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert str(info.value) == (
        "record.code: placeholder {idd} names no CSV column and no spec column "
        "(did you mean {id}? header: id, name)"
    )
    doc["record"]["code"] = "{id}"
    doc["columns"]["price"] = {"type": "decimal"}
    with pytest.raises(
        SpecError, match=r"^columns\.price: spec column 'price' is not in csv\.headers"
    ):
        parse_spec(doc)

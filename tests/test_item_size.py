"""One item-size rule: a number counts by the value DynamoDB stores, not by how it was written.

DynamoDB's published rule (docs.aws.amazon.com/amazondynamodb/latest/developerguide/
CapacityUnitCalculations.html): 1 byte per two significant digits plus 1, leading and
trailing zeros trimmed. It stores a normalised decimal, so an exponent is not digits. The
reference engine used to count the characters of ``E+3`` as digits while the capacity
units did not; both (and the native core's JSON values) now size with `importer.item_size`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer import item_size as rule
from importer.dynamodb import capacity_units
from importer.item_size import attribute_size, item_size_of
from importer.transform import native_engine, reference
from importer.transform.values import FieldError, parse_decimal


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1500", 2),
        ("1.5E+3", 2),
        ("15e2", 2),
        ("+1.5e3", 2),
        ("0.0015E6", 2),
        ("-0.00012300", 3),  # 123
        ("1.23456789E-100", 6),  # 9 significant digits
        ("0", 1),
        ("0E+10", 1),
    ],
)
def test_a_number_counts_its_significant_digits_whatever_its_notation(text, size):
    assert attribute_size({"N": text}) == size


_decimals = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{'.' + frac if frac else ''}{exp}",
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.from_regex(r"[0-9]{0,12}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,2}", fullmatch=True)),
)


@given(_decimals)
def test_the_size_of_a_number_is_the_size_of_its_normalised_form(text):
    """What the engines write (plain notation, `parse_decimal`) and what a reader of any
    other notation counts agree: the size depends on the value alone."""
    try:
        normalised = parse_decimal(text)
    except FieldError:
        return  # out of DynamoDB's range: never written
    assert attribute_size({"N": text}) == attribute_size({"N": normalised})


def test_every_sizer_uses_the_one_rule():
    """No second copy: the transform's 400 KB check, the native engine's JSON values and
    the capacity units all call `importer.item_size`."""
    assert reference.item_size_of is rule.item_size_of
    assert native_engine.attribute_size is rule.attribute_size
    assert capacity_units.item_size is rule.item_size
    assert not hasattr(reference, "_value_size")


def test_the_native_engine_sizes_a_json_column_by_the_rule():
    wire, size = native_engine._json_value('{"a": 1.5e3, "b": [0.00100, "x"]}')
    # M: 3 + (1 + 1 + N "1500"=2) + (1 + 1 + L: 3 + (1 + N "0.001"=2) + (1 + S "x"=1))
    assert size == 3 + (1 + 1 + 2) + (1 + 1 + 3 + (1 + 2) + (1 + 1)) == 17
    assert size == item_size_of({"v": {"M": {"a": {"N": "1500"}, "b": {"L": [
        {"N": "0.001"}, {"S": "x"}]}}}}) - 1  # fmt: skip

"""KeyLookup writes BatchGetItem bodies by hand: byte for byte what json.dumps writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from importer.dynamodb.api import DynamoClient
from importer.dynamodb.lookup import PROJECTION, KeyLookup

# any code point, lone surrogates included (the bodies are encoded with surrogatepass)
text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)


def reference_body(table: str, keys: list[tuple[str, str]], projection) -> bytes:
    spec: dict = {
        "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys],
        "ConsistentRead": True,
    }
    if projection:
        names = {f"#a{i}": n for i, n in enumerate(projection)}
        spec["ProjectionExpression"] = ",".join(names)
        spec["ExpressionAttributeNames"] = names
    doc = {"RequestItems": {table: spec}}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


class _Answers(DynamoClient):
    """A client whose BatchGetItem answers are given bytes (and counted)."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.calls = raw, 0

    def post(self, operation, body):
        from importer.dynamodb.api import Reply

        self.calls += 1
        return Reply(raw=self.raw)


@settings(max_examples=300, deadline=None)
@given(
    table=text,
    keys=st.lists(st.tuples(text, text), max_size=5),
    projection=st.sampled_from([PROJECTION, None, ('a"b', "é")]),
)
def test_body_equals_json_dumps(table, keys, projection):
    lookup = KeyLookup(client=_Answers(b""), projection=projection)
    assert lookup._body(table, keys) == reference_body(table, keys, lookup.projection)


plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.tuples(plain, plain), max_size=120),
    odd=st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "é", "\ud800"]),
)
def test_plain_keys_and_one_odd_character_both_equal_json_dumps(keys, odd):
    """Keys escaped in C (`_native.keys_json`, any str pair) and the encoder path (a lone
    surrogate: C steps aside) both write what json.dumps writes."""
    lookup = KeyLookup(client=_Answers(b""))
    assert lookup._body("T", keys) == reference_body("T", keys, lookup.projection)
    if keys:
        pk, sk = keys[-1]
        spoiled = [*keys[:-1], (pk, sk + odd)]
        assert lookup._body("T", spoiled) == reference_body("T", spoiled, lookup.projection)


def test_the_nothing_found_answer_is_read_without_parsing_and_means_what_it_says():
    lookup = KeyLookup(client=_Answers(b""))
    for table in ("app-data", "T.1_x-y"):
        assert json.loads(lookup._nothing_found(table)) == {
            "Responses": {table: []},
            "UnprocessedKeys": {},
        }
    keys = [("p", f"s{i}") for i in range(3)]
    client = _Answers(lookup._nothing_found("app-data"))
    assert KeyLookup(client=client).get_many("app-data", keys) == {}
    # another server's spacing is parsed as JSON: the same answer
    spaced = b'{"Responses": {"app-data": []}, "UnprocessedKeys": {}}'
    assert KeyLookup(client=_Answers(spaced)).get_many("app-data", keys) == {}
    assert client.calls == 1

"""A partial update, as the MBC framework's import applies one to an entity that exists.

The framework publishes a CHANGED row with ``publishPartialUpdateAsync``: the
latest version, ``mergeDeep``-ed with the row (``core/src/helpers/object.ts``),
becomes version + 1.  The mode stage (upsert/strict) builds the same version,
so an update file naming a few columns keeps every other attribute.  Values are
DynamoDB JSON throughout (``{"S": ...}``), never deserialized.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MERGED_FIELDS", "merge_deep", "merge_version"]

#: The fields of a stored version a partial update carries into the next one (besides the
#: identity fields every imported row sets itself): what ``transformCommandToData`` copies.
MERGED_FIELDS = ("name", "attributes", "isDeleted", "seq")


def _js_falsy(value: Mapping[str, Any]) -> bool:
    """Is this DynamoDB value falsy once the framework unmarshalls it into JavaScript?"""
    if "NULL" in value:
        return True
    if "S" in value:
        return value["S"] == ""
    if "BOOL" in value:
        return not value["BOOL"]
    if "N" in value:
        try:
            return float(value["N"]) == 0
        except ValueError:
            return False
    return False


def merge_deep(target: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """``mergeDeep`` (``core/src/helpers/object.ts``) on two DynamoDB ``M`` contents.

    A map merges into a map key by key; anything else (a scalar, a list, null)
    replaces.  Two quirks of the JavaScript kept on purpose, so an imported
    version is the one the framework's ``publishPartialUpdate`` would write:
    a map meets a falsy stored value (null, "", 0, false) -> the map; it meets a
    truthy non-map (text, number, list, set) -> the stored value stays.
    """
    out = dict(target)
    for key, value in source.items():
        if "M" in value:
            current = out.get(key)
            if current is None or _js_falsy(current):
                out[key] = {"M": merge_deep({}, value["M"])}
            elif "M" in current:
                out[key] = {"M": merge_deep(current["M"], value["M"])}
            # a truthy non-map stays (mergeDeep(target[key], ...) is a no-op on it)
        else:
            out[key] = value
    return out


def merge_version(
    stored: Mapping[str, Any], row: Mapping[str, Any], *, keep_name: bool
) -> dict[str, Any]:
    """The :data:`MERGED_FIELDS` of ``publishPartialUpdateAsync``'s next version.

    ``stored`` holds the latest version's fields, ``row`` the imported row's
    (``name``, ``attributes``).  Attributes deep-merge (:func:`merge_deep`), an
    attribute the row lacks (an empty optional column) keeps its stored value;
    ``isDeleted`` and ``seq`` carry over; ``name`` is the row's unless
    ``keep_name`` (the spec did not name one) and a name is stored.  Raises
    ValueError when the stored attributes are not a map (offloaded to S3).
    """
    out = {k: stored[k] for k in MERGED_FIELDS if k in stored}
    base = stored.get("attributes", {"M": {}})
    if "M" not in base:
        raise ValueError(
            "the stored attributes are not a map (offloaded to S3?): cannot merge into them; "
            'set [target] update = "replace" to write the row as the whole record'
        )
    out["attributes"] = {"M": merge_deep(base["M"], row.get("attributes", {}).get("M", {}))}
    if not (keep_name and "name" in stored) and "name" in row:
        out["name"] = row["name"]
    return out

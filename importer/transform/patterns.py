"""Spec patterns, matched in time linear in the value: a user's pattern cannot hang a run.

Python's `re` backtracks: `^([A-Z0-9]+-?)+$` against a 37-character value that
almost matches ran for minutes, and since the matcher is C code holding the GIL,
Ctrl-C waited with it.  A per-value time limit cannot stop it (nothing can
interrupt the C loop) and a pattern check alone misses shapes.  RE2
(`google-re2`, a dependency with wheels for every platform we ship) matches in
linear time whatever the pattern, so spec patterns are compiled by RE2.

RE2 has no backreferences, lookaround, atomic groups or possessive repeats --
the constructs that need backtracking.  A pattern that uses one is refused when
the spec loads, naming the construct, instead of being matched differently.
Other differences from `re` are small: `\\d`, `\\w`, `\\s` are ASCII classes,
and `$` matches only at the very end (not before a final newline).

Without google-re2 (a platform with no wheel), patterns run on `re`, and the
shapes that backtrack catastrophically -- a repeated group that itself holds a
repeat or an alternation, e.g. `(a+)+`, `(a|aa)*` -- are refused up front.
"""

from __future__ import annotations

from typing import Any, Protocol

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _parser
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

import re

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - exercised by test with the module hidden
    _re2 = None

__all__ = ["PatternError", "Matcher", "compile_pattern", "linear_engine"]


class PatternError(ValueError):
    """The pattern cannot be used (invalid, or it could make a run hang)."""


class Matcher(Protocol):
    def search(self, value: str) -> Any: ...


#: constructs that need a backtracking matcher (RE2 has none of them)
_BACKTRACKING_ONLY = {
    _c.GROUPREF: "a backreference",
    _c.GROUPREF_EXISTS: "a conditional group",
    _c.ASSERT: "a lookahead/lookbehind",
    _c.ASSERT_NOT: "a negative lookahead/lookbehind",
}
for _name, _what in (
    ("ATOMIC_GROUP", "an atomic group"),
    ("POSSESSIVE_REPEAT", "a possessive repeat"),
):
    if hasattr(_c, _name):
        _BACKTRACKING_ONLY[getattr(_c, _name)] = _what
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | (
    {_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set()
)


def linear_engine() -> bool:
    """True when patterns are matched by RE2 (linear time)."""
    return _re2 is not None


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns under one parsed node."""
    if op in _REPEATS:
        return [av[2]]
    if op == _c.SUBPATTERN:
        return [av[-1]]
    if op == _c.BRANCH:
        return list(av[1])
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [av[1]]
    if op == _c.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    if hasattr(_c, "ATOMIC_GROUP") and op == _c.ATOMIC_GROUP:
        return [av]
    return []


def _walk(sub: Any) -> Any:
    for op, av in sub:
        yield op, av
        for child in _children(op, av):
            yield from _walk(child)


def _ambiguous_repeat(sub: Any) -> bool:
    """A repeat (max > 1) whose body holds another repeat or an alternation."""
    for op, av in _walk(sub):
        if op in _REPEATS and av[1] > 1:
            for inner_op, inner_av in _walk(av[2]):
                if inner_op == _c.BRANCH or (inner_op in _REPEATS and inner_av[1] > 1):
                    return True
    return False


def compile_pattern(pattern: str) -> Matcher:
    """A matcher for `pattern` whose `search` cannot backtrack catastrophically."""
    try:
        parsed = _parser.parse(pattern)
        re.compile(pattern)  # the error messages users know
    except re.error as exc:
        raise PatternError(f"invalid regular expression: {exc}") from None
    for op, _av in _walk(parsed):
        what = _BACKTRACKING_ONLY.get(op)
        if what is not None:
            raise PatternError(
                f"uses {what}, which needs a backtracking matcher that one value can keep "
                "busy for hours; patterns are matched by RE2 (linear time): rewrite it without"
            )
    if _re2 is None:
        if _ambiguous_repeat(parsed):
            raise PatternError(
                "a repeated group that itself repeats or alternates (like (a+)+ or (a|ab)*) "
                "can keep one value busy for hours; rewrite it (or install google-re2)"
            )
        return re.compile(pattern)
    options = _re2.Options()
    options.log_errors = False  # the error is raised here, not also printed by the library
    try:
        return _re2.compile(pattern, options)
    except _re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise PatternError(f"not supported by the linear-time matcher (RE2): {detail}") from None

"""AMF0 and the AMF3 subset of command messages (relay/rtmp/amf0.py).

Input: byte 0 picks the entry point (mod 4): `decode_all` (data messages, script tags),
`decode_command` for type 20, `decode_command(amf3=True)` for type 17, or `decode` at the
offset given by byte 1; the rest is the message.

Allowed: `AmfError`, with a one-line reason of at most `common.MAX_REASON` characters (the session
turns it into the connection's close reason, which is logged: a peer's string must not reach
the log whole). Findings: any other exception, a longer or multi-line reason, a decoded value
that expands to more than `MAX_EXPANDED` nodes once shared references are followed (what a
`repr`, a log line or a re-encode walks), and a decoded value that does not survive
`encode` -> decode unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fuzz.common import Finding, check_reason, growth_feedback
from relay.rtmp import amf0

#: Nodes a decoded message may expand to when its shared references are walked. Fuzz inputs
#: are a few KiB, and without references every node costs at least one byte, so this many can
#: only come from references to nodes that themselves hold references (issue 12, item 1). It
#: is well above any sane per-message decode budget (the one planned for amf0.py counts a
#: reference as the whole size of its target and stops at 256 Ki), so a budget that works
#: passes this check.
MAX_EXPANDED = 1_000_000

_NAN = object()


def expanded_nodes(values: list[Any], limit: int = MAX_EXPANDED) -> int:
    """Nodes reached by walking `values` with shared references followed, stopping past
    `limit` (so a blow-up is measured, never performed)."""
    count = len(values)
    stack = list(values)
    while stack and count <= limit:
        value = stack.pop()
        children: Any = ()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        count += len(children)
        if count <= limit:
            stack.extend(children)
    return count


def _normal(value: Any) -> Any:
    """`value` with NaN made comparable (NaN != NaN) for the round-trip check."""
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normal(item) for item in value]
    return value


def _decode(mode: int, message: bytes) -> tuple[list[Any], Callable[[], list[Any]]]:
    """Decode `message` the way `mode` says; return the values and how to re-encode and
    decode them again."""
    if mode == 0:
        values = amf0.decode_all(message)
        return values, lambda: amf0.decode_all(amf0.encode(*values))
    if mode in (1, 2):
        name, txn, args = amf0.decode_command(message, amf3=mode == 2)

        def again() -> list[Any]:
            name2, txn2, args2 = amf0.decode_command(amf0.encode_command(name, txn, *args))
            return [name2, txn2, *args2]

        return [name, txn, *args], again
    offset = message[0] % (len(message) + 1) if message else 0
    value, end = amf0.decode(message, offset)
    if not offset < end <= len(message):
        raise Finding(f"decode at {offset} ended at {end} of {len(message)}")
    return [value], lambda: [amf0.decode(amf0.encode(value))[0]]


def check(data: bytes) -> None:
    if not data:
        return
    try:
        values, again = _decode(data[0] % 4, data[1:])
    except amf0.AmfError as exc:
        check_reason(exc)
        return
    nodes = expanded_nodes(values)
    growth_feedback(nodes)
    if nodes > MAX_EXPANDED:
        raise Finding(f"decoded values expand to over {MAX_EXPANDED} nodes through shared "
                      "references")
    try:
        decoded_again = again()
    except amf0.AmfError as exc:
        raise Finding(f"decoded values do not encode and decode again: {exc}") from None
    if _normal(decoded_again) != _normal(values):
        raise Finding("a decoded value changed through encode and decode")

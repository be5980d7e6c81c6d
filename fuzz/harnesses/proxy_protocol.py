"""The PROXY protocol header (relay/proxy_protocol.py), fed in fuzzer-chosen splits.

Input: `common.split_input` layout; the stream is what a trusted balancer's connection
starts with (flags unused).

Allowed: `ProxyHeaderError`, with a one-line reason of at most `common.MAX_REASON`
characters (the listener logs it). Findings: any other exception; a header longer than the
bytes fed or than `MAX_V2_HEADER_BYTES`; "need more" after `MAX_V2_HEADER_BYTES` bytes (the
reader would buffer without bound); `rest` that is not exactly what followed the header; a
split changing the result; a parsed header whose canonical encoding does not parse back to
the same addresses.
"""

from __future__ import annotations

from fuzz.common import Finding, check_reason, pieces, split_input
from relay.proxy_protocol import (
    MAX_V2_HEADER_BYTES,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    parse_proxy_header,
)

Result = tuple[ProxyHeader, bytes] | str | None  # (header, rest), the error, or need-more


def _run(stream_pieces: list[bytes]) -> tuple[Result, int]:
    """The reader's result and how many bytes it had been fed when it decided."""
    reader = ProxyHeaderReader()
    fed = 0
    for piece in stream_pieces:
        fed += len(piece)
        try:
            header = reader.feed(piece)
        except ProxyHeaderError as exc:
            check_reason(exc)
            return str(exc), fed
        if header is not None:
            return (header, reader.rest), fed
        if reader.buffered > MAX_V2_HEADER_BYTES:
            raise Finding(f"the reader holds {reader.buffered} bytes and still wants more")
    return None, fed


def check(data: bytes) -> None:
    _, lengths, stream = split_input(data)
    whole, _ = _run([stream] if stream else [])
    split, fed = _run(list(pieces(stream, lengths)))
    if isinstance(whole, tuple) and isinstance(split, tuple):
        header, rest = split
        if whole[0] != header:
            raise Finding(f"a split changed the header: {whole[0]} vs {header}")
        if header.length > min(len(stream), MAX_V2_HEADER_BYTES):
            raise Finding(f"header of {header.length} bytes from {len(stream)}")
        if rest + stream[fed:] != stream[header.length:]:
            raise Finding("rest is not what followed the header")
        again = parse_proxy_header(bytes(header))
        if again is None or (again.source, again.destination, again.command_local) != (
                header.source, header.destination, header.command_local):
            raise Finding(f"{header} does not survive its own encoding")
    elif (whole is None) != (split is None) or isinstance(whole, tuple) != isinstance(
            split, tuple):
        raise Finding(f"a split changed the outcome: {whole!r} vs {split!r}")

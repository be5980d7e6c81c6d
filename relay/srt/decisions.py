"""What the SRT listen callback answers a caller: accept (with the stream's passphrase) or reject.

`decide(streamid, address)` (relay/srt/admission.py) returns one of these; the listener
(relay/srt/listener.py) applies it to the new socket before libsrt completes the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SrtAccept:
    """Let the caller in; with a passphrase, the handshake fails unless the caller has it too."""

    passphrase: str | None


@dataclass(frozen=True, slots=True)
class SrtReject:
    """Refuse the caller before the handshake completes.

    `code` is the reject reason the caller gets (srt_getrejectreason): an HTTP-like code
    (403 forbidden, 404 not found, 409 conflict, 429 too many) is sent as
    SRT_REJC_PREDEFINED + code (1403, ...), a code already in 1000..2999 as it is (see
    `relay.srt.listener.reject_code`). `reason` is for Relay's own log line, never sent."""

    code: int
    reason: str

"""The Mux webhook envelope and its `Mux-Signature` header (sans-IO: no clock, no sockets).

Code written for Mux webhooks, the official SDKs' `webhooks.unwrap`/`verifySignature`
included, checks `Mux-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
over the raw body and rejects a `t` older than 300 s, so the header is made at each attempt
with that attempt's time, while the event `id` stays the outbox row's id across retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from relay.store.records import Event, JSONDict

SIGNATURE_HEADER = "Mux-Signature"
#: Mux's envelope names the environment the event comes from; a Relay is one environment.
ENVIRONMENT: JSONDict = {"name": "relay", "id": "relay"}
#: Type of the event `relay webhooks test` sends: not a Mux type, so an application that
#: dispatches on type ignores it, while its signature check runs as for any other event.
TEST_EVENT_TYPE = "relay.webhooks.test"


def iso_time(unix_seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as Mux writes the envelope's `created_at`."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def envelope(event: Event, attempts: Sequence[JSONDict] = ()) -> JSONDict:
    """The body of a delivery of `event`: Mux's envelope (MUX-API.md, Webhooks), with the
    earlier tries of this delivery in `attempts`."""
    return {
        "type": event.type,
        "object": {"type": event.object_type, "id": event.object_id},
        "id": event.id,
        "environment": dict(ENVIRONMENT),
        "data": event.data,
        "created_at": iso_time(event.created_at),
        "attempts": list(attempts),
        "accessor_source": None,
        "accessor": None,
        "request_id": None,
    }


def check_envelope(now: float) -> JSONDict:
    """A signed-delivery check for `relay webhooks test`: a fresh id, nothing in the store."""
    event = Event(id=str(uuid.uuid4()), type=TEST_EVENT_TYPE, object_type="test",
                  object_id="test", data={"message": "a test event from relay webhooks test"},
                  created_at=now)
    return envelope(event)


def encode_body(body: JSONDict) -> bytes:
    """The bytes that are sent and signed: compact UTF-8 JSON."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Mux-Signature` header value of `body` sent at `timestamp` (Unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def attempt_record(address: str, at: float, status_code: int | None,
                   error: str | None) -> JSONDict:
    """One try as the envelope's `attempts` lists it (Mux's attempt object, in part)."""
    return {"id": str(uuid.uuid4()), "created_at": iso_time(at), "address": address,
            "response_status_code": status_code, "error": error}

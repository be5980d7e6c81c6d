"""The envelope and the Mux-Signature header, checked against an independent HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json

from relay.store.records import Event
from relay.webhooks.signing import check_envelope, encode_body, envelope, iso_time, sign

EVENT = Event(id="3a56ac3d-33da-4366-855b-f592d898409d", type="video.live_stream.active",
              object_type="live_stream", object_id="ls1",
              data={"id": "ls1", "status": "active", "created_at": 1527110899},
              created_at=1527110899.25)


def test_signature_known_answer() -> None:
    # Computed here from the definition in MUX-API.md, not with relay's code.
    secret, body, t = "whsec", b'{"type":"x"}', 1700000000
    expected = hmac.new(b"whsec", b'1700000000.{"type":"x"}', hashlib.sha256).hexdigest()
    assert sign(secret, body, t) == f"t=1700000000,v1={expected}"
    # A fixed vector as well, so a change of the scheme cannot pass both sides.
    assert sign("secret", b"body", 1) == (
        "t=1,v1=" + hmac.new(b"secret", b"1.body", hashlib.sha256).hexdigest())


def test_signature_changes_with_every_input() -> None:
    base = sign("s", b"b", 1)
    assert sign("s2", b"b", 1) != base
    assert sign("s", b"c", 1) != base
    assert sign("s", b"b", 2) != base


def test_envelope_shape() -> None:
    body = envelope(EVENT)
    assert set(body) == {"type", "object", "id", "environment", "data", "created_at",
                         "attempts", "accessor_source", "accessor", "request_id"}
    assert body["type"] == "video.live_stream.active"
    assert body["object"] == {"type": "live_stream", "id": "ls1"}
    assert body["id"] == EVENT.id
    assert body["data"]["created_at"] == 1527110899  # an integer inside data
    assert body["created_at"] == "2018-05-23T21:28:19.250Z"  # ISO for the envelope
    assert body["attempts"] == []
    assert body["accessor"] is None and body["request_id"] is None
    assert set(body["environment"]) == {"name", "id"}


def test_envelope_keeps_the_id_and_lists_earlier_tries() -> None:
    tries = [{"response_status_code": 500}]
    again = envelope(EVENT, tries)
    assert again["id"] == envelope(EVENT)["id"]
    assert again["attempts"] == tries


def test_body_is_compact_json_of_the_envelope() -> None:
    body = encode_body(envelope(EVENT))
    assert b" " not in body.replace(b"video.live_stream", b"")
    assert json.loads(body) == envelope(EVENT)


def test_test_event_has_a_fresh_id() -> None:
    first, second = check_envelope(10.0), check_envelope(10.0)
    assert first["id"] != second["id"]
    assert first["type"] == "relay.webhooks.test"


def test_iso_time() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"

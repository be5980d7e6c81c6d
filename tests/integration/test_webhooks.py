"""Webhooks from a real `relay serve` to a receiver started here (127.0.0.1, a free port).

The receiver checks each request's Mux-Signature with its own HMAC and keeps the envelopes.
It answers 500 for a while, then 200: every event still arrives, in order per object, with
its attempts recorded; a kill -9 with events not yet delivered loses none of them. The
official Mux Node SDK's `webhooks.unwrap` accepts every delivery, and refuses a tampered one
(tests/node/verify_webhook.mjs; `make test` installs node and the SDK).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.relay_process import RelayProcess
from tests.integration.helpers.webhooks import SECRET, Receiver, receiver, wait_until

__all__ = ["receiver"]  # fixtures, defined in tests.integration.helpers.webhooks

TOKEN = ("webhook-test", "webhook-test-secret-0123456789-abcdefghij")
NODE = shutil.which("node")
VERIFY_WEBHOOK = Path(__file__).parents[1] / "node" / "verify_webhook.mjs"
#: Where `make test` unpacks `@mux/mux-node` (the Makefile's MUX_NODE_PREFIX).
MUX_NODE_PREFIX = Path(os.environ.get("RELAY_MUX_NODE_PREFIX",
                                      Path(__file__).parents[2] / ".make" / "mux-node"))
needs_node = pytest.mark.skipif(NODE is None,
                                reason="node is not installed (make test installs it)")
needs_mux_node = pytest.mark.skipif(
    not (MUX_NODE_PREFIX / "node_modules" / "@mux" / "mux-node" / "package.json").exists(),
    reason=f"@mux/mux-node is not in {MUX_NODE_PREFIX} (make test installs it)")


def relay_for(data_dir: Path, url: str) -> RelayProcess:
    """Not started: `with` starts it."""
    return RelayProcess(data_dir, token=TOKEN, extra_args=["--webhook-url", url],
                        env={"RELAY_WEBHOOK_SECRET": SECRET})


def make_events(relay: RelayProcess, streams: int = 3) -> list[str]:
    """Per stream: created, updated, disabled, enabled (in that order)."""
    ids = []
    with httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10) as client:
        for n in range(streams):
            created = client.post("/video/v1/live-streams",
                                  json={"playback_policies": ["public"]})
            assert created.status_code == 201, created.text
            stream_id = created.json()["data"]["id"]
            ids.append(stream_id)
            assert client.patch(f"/video/v1/live-streams/{stream_id}",
                                json={"passthrough": f"p{n}"}).status_code == 200
            assert client.put(f"/video/v1/live-streams/{stream_id}/disable").status_code == 200
            assert client.put(f"/video/v1/live-streams/{stream_id}/enable").status_code == 200
    return ids


ORDER = ["video.live_stream.created", "video.live_stream.updated",
         "video.live_stream.disabled", "video.live_stream.enabled"]


def delivered_in_order(receiver: Receiver, ids: list[str]) -> None:
    firsts: dict[str, dict[str, Any]] = {}
    for event in receiver.events:  # duplicates are allowed (at least once); order is not
        firsts.setdefault(event["id"], event)
    for stream_id in ids:
        mine = [e for e in receiver.events if e["object"]["id"] == stream_id]
        seen: list[str] = []
        for event in mine:
            if event["type"] not in seen:
                seen.append(event["type"])
        assert seen == ORDER, (stream_id, seen)
    assert receiver.bad_signatures == 0


def listed(relay: RelayProcess, **params: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10) as client:
        answer = client.get("/system/v1/webhook-events", params={"limit": "100", **params})
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data


def test_a_receiver_down_for_a_while_gets_every_event_in_order(
        tmp_path: Path, receiver: Receiver) -> None:
    refusals = 6
    receiver.status = lambda: 500 if receiver.requests <= refusals else 200
    with relay_for(tmp_path / "data", receiver.url) as relay:
        ids = make_events(relay)
        wait_until(lambda: len({e["id"] for e in receiver.events}) == 4 * len(ids), 60,
                   "every event to be delivered")
        delivered_in_order(receiver, ids)
        rows = listed(relay)
        assert len(rows) == 4 * len(ids)
        assert {r["status"] for r in rows} == {"delivered"}
        retried = [r for r in rows if r["attempts"] > 1]
        assert retried and all(r["last_error"].startswith("HTTP 500") for r in retried)
        assert sum(r["attempts"] for r in rows) == receiver.requests
        # A retry carries the earlier tries and the same id.
        again = [e for e in receiver.events if e["attempts"]]
        assert again and all(a["response_status_code"] == 500
                             for e in again for a in e["attempts"])
        assert listed(relay, status="pending") == []
        assert len(listed(relay, object_id=ids[0])) == 4
        assert len(listed(relay, type="video.live_stream.enabled")) == len(ids)
        assert relay.stop() == 0, relay.log


def test_kill_9_then_restart_delivers_what_was_left(tmp_path: Path,
                                                   receiver: Receiver) -> None:
    receiver.status = lambda: 503
    data_dir = tmp_path / "data"
    relay = relay_for(data_dir, receiver.url).start()
    try:
        ids = make_events(relay, streams=2)
        # The deliverer queues new events at each poll: wait until it has all eight.
        wait_until(lambda: len(listed(relay, status="pending")) == 8, 30,
                   "every event queued")
        wait_until(lambda: receiver.requests >= 2, 30, "the first tries")
    finally:
        relay.stop(signal.SIGKILL)
    assert receiver.events  # refused, but signed and well-formed
    receiver.status = lambda: 200
    with relay_for(data_dir, receiver.url) as again:
        wait_until(lambda: len({e["id"] for e in receiver.events}) == 8, 60,
                   "the events left by the killed relay")
        delivered_in_order(receiver, ids)
        assert {r["status"] for r in listed(again)} == {"delivered"}
        assert again.stop() == 0, again.log


def test_webhooks_test_command(receiver: Receiver) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "webhooks", "test", receiver.url,
         "--webhook-secret", SECRET], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP 200")
    [event] = receiver.events
    assert event["type"] == "relay.webhooks.test"
    receiver.status = lambda: 500
    failed = subprocess.run(
        [sys.executable, "-m", "relay", "webhooks", "test", receiver.url,
         "--webhook-secret", SECRET], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1
    assert failed.stdout.startswith("HTTP 500")


def verified_by_mux_node(deliveries: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """tests/node/verify_webhook.mjs on `deliveries`: `new Mux({webhookSecret}).webhooks
    .unwrap(body, headers)` on each; stdout says `INDEX ID TYPE` per accepted one."""
    assert NODE is not None
    return subprocess.run(
        [NODE, str(VERIFY_WEBHOOK)], input=json.dumps(deliveries), capture_output=True,
        text=True, timeout=60,
        env={**os.environ, "MUX_WEBHOOK_SECRET": SECRET,
             "RELAY_MUX_NODE_PREFIX": str(MUX_NODE_PREFIX)})


@needs_node
@needs_mux_node
def test_the_official_node_sdk_accepts_every_delivery(tmp_path: Path,
                                                      receiver: Receiver) -> None:
    refusals = 3  # so that retries, whose envelopes list the earlier tries, are checked too
    receiver.status = lambda: 500 if receiver.requests <= refusals else 200
    with relay_for(tmp_path / "data", receiver.url) as relay:
        ids = make_events(relay, streams=2)
        with httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10) as client:
            assert client.delete(f"/video/v1/live-streams/{ids[0]}").status_code == 204
        wait_until(lambda: len({e["id"] for e in receiver.events}) == 4 * len(ids) + 1, 60,
                   "every event to be delivered")
        assert relay.stop() == 0, relay.log
    deliveries = receiver.deliveries
    assert receiver.bad_signatures == 0 and len(deliveries) == receiver.requests > refusals
    envelopes = [json.loads(d["body"]) for d in deliveries]
    assert any(e["attempts"] for e in envelopes)
    assert "video.live_stream.deleted" in {e["type"] for e in envelopes}

    checked = verified_by_mux_node(deliveries)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [f"{n} {e['id']} {e['type']}"
                                           for n, e in enumerate(envelopes)]

    # Relay's own delivery (accepted), then the same delivery altered: another type in the
    # body under the original signature, and the original body under another's signature.
    deleted, envelope = next((d, e) for d, e in zip(deliveries, envelopes, strict=True)
                             if e["type"] == "video.live_stream.deleted")
    retyped = deleted["body"].replace('"video.live_stream.deleted"',
                                      '"video.live_stream.created"')
    assert retyped != deleted["body"] and deliveries[0]["body"] != deleted["body"]
    refused = verified_by_mux_node([
        deleted,
        {"body": retyped, "headers": deleted["headers"]},
        {"body": deleted["body"], "headers": deliveries[0]["headers"]},
    ])
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert refused.stdout.splitlines() == [f"0 {envelope['id']} video.live_stream.deleted"]
    mismatch = "rejected: No signatures found matching the expected signature for payload."
    assert refused.stderr.splitlines() == [f"1 {mismatch}", f"2 {mismatch}"]

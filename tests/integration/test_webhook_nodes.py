"""Two `relay serve` nodes on one PostgreSQL database (testkit/postgres.py), both with the same
`--webhook-url`: lifecycle events made through the API on either node reach the receiver
signed, exactly once each when it answers 200, and in order per object, though both nodes'
deliverers work the one outbox (issue 19)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess
from tests.integration.helpers.webhooks import SECRET, Receiver, receiver, wait_until

__all__ = ["receiver"]  # fixture, defined in tests.integration.helpers.webhooks

TOKEN = ("nodes-test-token", "nodes-test-secret-0123456789-abcdefghij")
ORDER = ["video.live_stream.created", "video.live_stream.updated",
         "video.live_stream.disabled", "video.live_stream.enabled",
         "video.live_stream.deleted"]
#: Longer than the deliverers' poll (0.5 s) and an answer's delay: a duplicate would be in.
SETTLE_S = 3.0


def node(url: str, data_dir: Path, hook: str) -> RelayProcess:
    return RelayProcess(data_dir, token=TOKEN,
                        extra_args=["--database-url", url, "--webhook-url", hook],
                        env={"RELAY_WEBHOOK_SECRET": SECRET})


def make_events(first: httpx.Client, second: httpx.Client, n: int) -> list[str]:
    """A stream created on `first`, updated on `second`, disabled on `first`, enabled on
    `second` and deleted on `first`: one object's events from both nodes."""
    created = first.post("/video/v1/live-streams", json={"playback_policies": ["public"]})
    assert created.status_code == 201, created.text
    stream_id: str = created.json()["data"]["id"]
    path = f"/video/v1/live-streams/{stream_id}"
    assert second.patch(path, json={"passthrough": f"p{n}"}).status_code == 200
    assert first.put(f"{path}/disable").status_code == 200
    assert second.put(f"{path}/enable").status_code == 200
    assert first.delete(path).status_code == 204
    return [stream_id]


def webhook_events(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/system/v1/webhook-events", params={"limit": "100"})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def test_two_nodes_deliver_each_event_once(postgres: PostgresCluster, tmp_path: Path,
                                           receiver: Receiver) -> None:
    # Answers that take a while keep one node's tries in flight while the other looks.
    receiver.delay = 0.3
    url = postgres.create_database()
    with node(url, tmp_path / "a", receiver.url) as a, \
            node(url, tmp_path / "b", receiver.url) as b, \
            httpx.Client(base_url=a.http_url, auth=TOKEN, timeout=10) as on_a, \
            httpx.Client(base_url=b.http_url, auth=TOKEN, timeout=10) as on_b:
        ids: list[str] = []
        for n in range(3):
            ids += make_events(on_a, on_b, n)
            ids += make_events(on_b, on_a, n + 3)
        expected = len(ORDER) * len(ids)
        wait_until(lambda: len({e["id"] for e in receiver.events}) >= expected, 90,
                   f"{expected} events at the receiver")
        time.sleep(SETTLE_S)
        assert receiver.bad_signatures == 0
        sent = Counter(e["id"] for e in receiver.events)
        assert len(sent) == expected
        assert [i for i, times in sent.items() if times > 1] == []  # exactly once
        assert len(receiver.deliveries) == expected
        for stream_id in ids:
            assert [e["type"] for e in receiver.events
                    if e["object"]["id"] == stream_id] == ORDER, stream_id
        for client in (on_a, on_b):
            rows = webhook_events(client)
            assert len(rows) == expected
            assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
        assert a.stop() == 0, a.log
        assert b.stop() == 0, b.log

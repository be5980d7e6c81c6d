"""The API in process (httpx against the ASGI app): shapes, defaults and every error path.

The official SDK drives the same routes over a real socket in tests/integration.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from relay.api import MAX_BODY_BYTES
from relay.api.deps import MAX_PAGE, MAX_PAGE_SIZE
from relay.api.errors import MAX_ERROR_MESSAGES
from relay.api.responses import (
    EmptyResponse,
    LiveStreamListResponse,
    LiveStreamResponse,
    PlaybackIdLookupResponse,
    PlaybackIdResponse,
    SimulcastTargetResponse,
    WebhookEventListResponse,
)
from relay.store import Store

pytestmark = pytest.mark.anyio

SDK_DEFAULT_CREATE = {
    "playback_policy": ["public"],
    "new_asset_settings": {"playback_policy": ["public"], "normalize_audio": False,
                           "copy_overlays": True},
    "reconnect_window": 60, "use_slate_for_standard_latency": False,
    "max_continuous_duration": 43200,
}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "messages"}
    assert all(isinstance(m, str) for m in body["error"]["messages"])
    error: dict[str, Any] = body["error"]
    return error


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/video/v1/live-streams", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_sdk_default_create_shape(client: httpx.AsyncClient) -> None:
    data = await create(client, **SDK_DEFAULT_CREATE)
    assert isinstance(data["created_at"], str) and data["created_at"].isdigit()
    assert data["status"] == "idle"
    assert data["latency_mode"] == "standard" and data["reconnect_window"] == 60
    assert data["max_continuous_duration"] == 43200
    assert [p["policy"] for p in data["playback_ids"]] == ["public"]
    assert data["new_asset_settings"] == {"playback_policies": ["public"],
                                          "normalize_audio": False, "copy_overlays": True}
    assert data["recent_asset_ids"] == [] and data["simulcast_targets"] == []
    assert "active_ingest_protocol" not in data and "active_asset_id" not in data


@pytest.mark.parametrize(("body", "mode", "window"), [
    ({}, "standard", 60.0),
    ({"latency_mode": "low"}, "low", 0.0),
    ({"latency_mode": "reduced"}, "reduced", 0.0),
    ({"latency_mode": "low", "reconnect_window": 30}, "low", 30.0),
    ({"low_latency": True}, "low", 0.0),
    ({"reduced_latency": True}, "reduced", 0.0),
])
async def test_latency_mode_defaults(client: httpx.AsyncClient, body: dict[str, Any],
                                     mode: str, window: float) -> None:
    data = await create(client, **body)
    assert (data["latency_mode"], data["reconnect_window"]) == (mode, window)
    assert data["low_latency"] is (mode == "low")


async def test_policy_as_string_and_plural(client: httpx.AsyncClient) -> None:
    data = await create(client, playback_policies="signed")
    assert [p["policy"] for p in data["playback_ids"]] == ["signed"]
    data = await create(client, playback_policies=["public", "signed"],
                        playback_policy=["public"])
    assert [p["policy"] for p in data["playback_ids"]] == ["public", "signed"]


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    data = await create(client, embedded_subtitles=[{"x": 1}], surprise="yes")
    assert "surprise" not in data


@pytest.mark.parametrize(("body", "fields"), [
    ({"reconnect_window": 1801}, ["reconnect_window"]),
    ({"reconnect_window": -1}, ["reconnect_window"]),
    ({"max_continuous_duration": 59}, ["max_continuous_duration"]),
    ({"max_continuous_duration": 43201}, ["max_continuous_duration"]),
    ({"latency_mode": "ultra"}, ["latency_mode"]),
    ({"audio_only": "yes"}, ["audio_only"]),
    ({"playback_policy": ["drm"]}, ["playback_policy[0]"]),
    ({"passthrough": "x" * 256}, ["passthrough"]),
    ({"simulcast_targets": [{"url": "http://x/app"}]}, ["simulcast_targets[0].url"]),
    ({"reconnect_window": "60", "latency_mode": "slow"}, ["reconnect_window", "latency_mode"]),
])
async def test_invalid_parameters_name_each_field(
    client: httpx.AsyncClient, body: dict[str, Any], fields: list[str]
) -> None:
    response = await client.post("/video/v1/live-streams", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_parameters"
    assert [m.split(":")[0] for m in error["messages"]] == fields


async def test_malformed_json_and_non_object(client: httpx.AsyncClient) -> None:
    response = await client.post("/video/v1/live-streams", content=b'{"latency_mode": ',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["messages"][0]
    response = await client.post("/video/v1/live-streams", json=[1, 2])
    assert response.status_code == 400


async def test_body_over_one_mib_is_413(client: httpx.AsyncClient) -> None:
    big = {"passthrough": "x", "pad": "y" * MAX_BODY_BYTES}
    response = await client.post("/video/v1/live-streams", json=big)
    assert response.status_code == 413
    assert error_of(response)["type"] == "request_too_large"
    # Just under the limit is parsed (and the unknown field ignored).
    ok = {"pad": "y" * (MAX_BODY_BYTES - 100)}
    assert (await client.post("/video/v1/live-streams", json=ok)).status_code == 201


async def test_chunked_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * (MAX_BODY_BYTES // 10)

    response = await client.post("/video/v1/live-streams", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation)
            for path, methods in document["paths"].items()
            for method, operation in methods.items()]


@pytest.mark.parametrize("auth", [None, ("wrong", "credentials"), "bearer", "garbage"])
async def test_unauthorized_on_every_operation(client: httpx.AsyncClient, auth: Any) -> None:
    headers = {"authorization": "Bearer abc"} if auth == "bearer" else {}
    if auth == "garbage":
        headers = {"authorization": "Basic !!!not base64"}
    # auth=None keeps the client's default credentials off this request.
    kwargs: dict[str, Any] = {"headers": headers, "auth": None}
    if auth not in ("bearer", "garbage"):
        kwargs["auth"] = auth if auth else httpx.BasicAuth("", "")
    document = (await client.get("/openapi.json")).json()
    protected = [(m, p) for m, p, _ in operations(document)
                 if p.startswith(("/video/v1", "/system/v1"))]
    # 23 of live streams and assets, 8 of signing keys (two paths), 6 of restrictions.
    assert len(protected) == 37
    for method, path in [*protected, ("GET", "/video/v1/nothing")]:
        response = await client.request(method, path.replace("{", "").replace("}", ""),
                                         content=b"{bad json", **kwargs)
        assert response.status_code == 401, (method, path)
        assert error_of(response)["type"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Basic")


async def test_openapi_documents_every_answer(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for method, path, operation in operations(document):
        answers = operation["responses"]
        assert "422" not in answers, (method, path)
        expected_errors = {"413"}
        if path.startswith(("/video/v1", "/system/v1")):
            expected_errors |= {"401", "429", "503"}
            # Path ids are any text (an unknown one is a 404); queries and bodies are checked.
            checked = [p for p in operation.get("parameters", []) if p["in"] != "path"]
            if checked or operation.get("requestBody"):
                expected_errors.add("400")
            if (method, path.rsplit("/", 2)[-2]) == ("DELETE", "simulcast-targets"):
                expected_errors.add("400")  # only while the stream is idle
            if (method, path.rsplit("/", 1)[-1]) == ("POST", "signing-keys"):
                expected_errors.add("400")  # past MAX_SIGNING_KEYS
            if "{" in path:
                expected_errors.add("404")
        elif path == "/readyz":
            expected_errors.add("503")
        successes = {code for code in answers if code.startswith("2")}
        assert len(successes) == 1, (method, path)
        assert set(answers) - successes == expected_errors, (method, path)
        for code in expected_errors - {"503"} if path == "/readyz" else expected_errors:
            assert answers[code]["content"]["application/json"]["schema"] == envelope
        (success,) = successes
        if success != "204":
            schema = answers[success]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith(("Response", "HealthStatus", "Readiness"))
    # Constraints are JSON Schema keywords (minimum, not pydantic's ge) so that clients
    # and fuzzers read them.
    text = json.dumps(document)
    for keyword in ('"ge":', '"le":', '"gt":', '"lt":'):
        assert keyword not in text


async def test_answers_match_their_documented_models(client: httpx.AsyncClient) -> None:
    stream = await create(client, **SDK_DEFAULT_CREATE, passthrough="p",
                          meta={"title": "t"}, simulcast_targets=[
                              {"url": "rtmp://x.example/app", "stream_key": "k"}])
    LiveStreamResponse.model_validate({"data": stream})
    listed = (await client.get("/video/v1/live-streams")).json()
    LiveStreamListResponse.model_validate(listed)
    pid = (await client.post(f"/video/v1/live-streams/{stream['id']}/playback-ids",
                             json={"policy": "signed"})).json()
    PlaybackIdResponse.model_validate(pid)
    lookup = (await client.get(f"/video/v1/playback-ids/{pid['data']['id']}")).json()
    PlaybackIdLookupResponse.model_validate(lookup)
    target = stream["simulcast_targets"][0]["id"]
    SimulcastTargetResponse.model_validate((await client.get(
        f"/video/v1/live-streams/{stream['id']}/simulcast-targets/{target}")).json())
    EmptyResponse.model_validate((await client.put(
        f"/video/v1/live-streams/{stream['id']}/disable")).json())


async def test_method_not_allowed_lists_every_method_of_the_path(
        client: httpx.AsyncClient) -> None:
    response = await client.put("/video/v1/live-streams")
    assert response.headers["allow"] == "GET, POST"
    response = await client.post("/video/v1/live-streams/some-id")
    assert response.headers["allow"] == "DELETE, GET, PATCH"


async def test_store_outage_is_503_without_its_text(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def unavailable(*_: Any, **__: Any) -> None:
        raise OperationalError("SELECT secret_hash FROM access_tokens WHERE id = ?",
                               ("peer-chosen-id",), sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(store, "list_live_streams", unavailable)
    response = await client.get("/video/v1/live-streams")
    assert response.status_code == 503
    assert error_of(response)["type"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    logged = caplog.text
    assert "OperationalError" in logged
    assert "SELECT" not in logged and "peer-chosen-id" not in logged


async def test_not_found_everywhere(client: httpx.AsyncClient) -> None:
    stream = await create(client)
    for method, path in [
        ("GET", "/video/v1/live-streams/missing"),
        ("PATCH", "/video/v1/live-streams/missing"),
        ("DELETE", "/video/v1/live-streams/missing"),
        ("PUT", "/video/v1/live-streams/missing/disable"),
        ("PUT", "/video/v1/live-streams/missing/enable"),
        ("PUT", "/video/v1/live-streams/missing/complete"),
        ("POST", "/video/v1/live-streams/missing/reset-stream-key"),
        ("POST", "/video/v1/live-streams/missing/playback-ids"),
        ("GET", f"/video/v1/live-streams/{stream['id']}/playback-ids/missing"),
        ("DELETE", f"/video/v1/live-streams/{stream['id']}/playback-ids/missing"),
        ("POST", "/video/v1/live-streams/missing/simulcast-targets"),
        ("GET", f"/video/v1/live-streams/{stream['id']}/simulcast-targets/missing"),
        ("DELETE", f"/video/v1/live-streams/{stream['id']}/simulcast-targets/missing"),
        ("GET", "/video/v1/assets/missing"),
        ("DELETE", "/video/v1/assets/missing"),
        ("POST", "/video/v1/assets/missing/playback-ids"),
        ("GET", "/video/v1/playback-ids/missing"),
        ("GET", "/video/v1/no-such-route"),
    ]:
        body = {"url": "rtmp://x.example/app"} if "simulcast" in path else {}
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response)["type"] == "not_found"


async def test_playback_id_of_other_stream_is_404(client: httpx.AsyncClient) -> None:
    a, b = await create(client, playback_policy="public"), await create(client)
    pid = a["playback_ids"][0]["id"]
    assert (await client.get(f"/video/v1/live-streams/{b['id']}/playback-ids/{pid}")
            ).status_code == 404
    lookup = (await client.get(f"/video/v1/playback-ids/{pid}")).json()["data"]
    assert lookup == {"id": pid, "policy": "public",
                      "object": {"type": "live_stream", "id": a["id"]}}


async def test_patch_and_lifecycle_actions(client: httpx.AsyncClient) -> None:
    stream = await create(client)
    path = f"/video/v1/live-streams/{stream['id']}"
    patched = await client.patch(path, json={"passthrough": "hello", "latency_mode": "low",
                                             "meta": {"title": "Finals"}})
    assert patched.status_code == 200
    data = patched.json()["data"]
    assert (data["passthrough"], data["latency_mode"], data["meta"]) == (
        "hello", "low", {"title": "Finals"})
    assert data["reconnect_window"] == 60  # PATCH changes only what it names
    bad = await client.patch(path, json={"max_continuous_duration": 10})
    assert bad.status_code == 400
    assert error_of(bad)["messages"][0].startswith("max_continuous_duration:")
    for action, status in [("disable", "disabled"), ("enable", "idle"), ("complete", "idle")]:
        response = await client.put(f"{path}/{action}")
        assert (response.status_code, response.json()) == (200, {"data": {}})
        assert (await client.get(path)).json()["data"]["status"] == status
    reset = await client.post(f"{path}/reset-stream-key")
    assert reset.status_code == 201
    assert reset.json()["data"]["stream_key"] != stream["stream_key"]
    deleted = await client.delete(path)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await client.get(path)).status_code == 404


async def test_list_validation_and_paging(client: httpx.AsyncClient) -> None:
    ids = [(await create(client))["id"] for _ in range(3)]
    page = (await client.get("/video/v1/live-streams", params={"limit": 2, "page": 2}))
    assert [s["id"] for s in page.json()["data"]] == [ids[0]]
    past = await client.get("/video/v1/live-streams", params={"page": 9})
    assert past.json() == {"data": []}
    for params, field in [({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                          ({"page": 0}, "page"), ({"status": "gone"}, "status")]:
        response = await client.get("/video/v1/live-streams", params=params)
        assert response.status_code == 400
        assert error_of(response)["messages"][0].startswith(f"{field}:")


@pytest.mark.parametrize("path", ["/video/v1/live-streams", "/video/v1/assets"])
@pytest.mark.parametrize("params", [
    {"page": "365720738912483540992"}, {"page": str(2**63 - 1)},
    {"page": str(MAX_PAGE), "limit": str(MAX_PAGE_SIZE)},
])
async def test_out_of_range_pages_are_empty_never_5xx(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    # Issue 12 item 9: these answered 500 (SQLite OverflowError on the offset).
    await create(client)
    response = await client.get(path, params=params)
    if int(params["page"]) <= MAX_PAGE:
        assert response.json() == {"data": []}
    else:
        assert response.status_code == 400
        assert error_of(response)["messages"][0].startswith("page:")


@pytest.mark.parametrize("path", ["/video/v1/live-streams", "/video/v1/assets"])
@pytest.mark.parametrize("params", [
    {"limit": "365720738912483540992"}, {"limit": "-1"}, {"limit": "1e2"},
    {"page": "-365720738912483540992"}, {"page": ""}, {"page": "1.5"},
    {"page": str(MAX_PAGE + 1)}, {"status": "x" * 5000}, {"stream_key": "k" * 65},
    {"live_stream_id": "s" * 65},
])
async def test_bad_paging_and_filters_are_400(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    name = next(iter(params))
    if (name in ("stream_key", "status") and path.endswith("assets")) or (
            name == "live_stream_id" and path.endswith("live-streams")):
        assert response.status_code == 200  # not a parameter of this route: ignored
        return
    assert response.status_code == 400, response.text
    message = error_of(response)["messages"][0]
    assert message.startswith(f"{name}:")
    assert len(message) < 400  # the peer's value is shown cut short, not whole


async def test_many_bad_values_give_a_bounded_answer(client: httpx.AsyncClient) -> None:
    targets = [{"url": "http://not-rtmp.example/" + "x" * 500} for _ in range(1000)]
    response = await client.post("/video/v1/live-streams", json={"simulcast_targets": targets})
    assert response.status_code == 400
    messages = error_of(response)["messages"]
    assert len(messages) == MAX_ERROR_MESSAGES + 1
    assert messages[0].startswith("simulcast_targets[0].url:")
    assert messages[-1] == "... and 980 more invalid values not listed"
    assert len(response.content) < 20_000


@pytest.mark.parametrize("body", [
    '{"passthrough": "\\ud800"}',
    '{"new_asset_settings": {"passthrough": "a\\udfff"}}',
    '{"meta": {"title": "\\ud83d"}}',
])
async def test_a_lone_surrogate_in_a_body_is_a_400(client: httpx.AsyncClient, body: str) -> None:
    response = await client.post("/video/v1/live-streams", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "lone UTF-16 surrogate" in error_of(response)["messages"][0]
    # A surrogate pair is one valid character and is kept.
    response = await client.post("/video/v1/live-streams",
                                 content='{"passthrough": "\\ud83d\\ude00"}',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["passthrough"] == "\U0001f600"


async def test_get_with_json_content_type(client: httpx.AsyncClient) -> None:
    # The SDK sends Content-Type: application/json on GET, with no body.
    response = await client.get("/video/v1/live-streams",
                                headers={"content-type": "application/json"})
    assert response.status_code == 200


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://relay")
    async with anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).status_code == 200
        spec = (await anonymous.get("/openapi.json")).json()
        assert "/video/v1/live-streams/{live_stream_id}/reset-stream-key" in spec["paths"]
        assert (await anonymous.get("/docs")).status_code == 200


async def test_method_not_allowed_uses_envelope(client: httpx.AsyncClient) -> None:
    response = await client.put("/video/v1/live-streams")
    assert response.status_code == 405
    assert error_of(response)["type"] == "invalid_request"


async def test_webhook_events_list_with_filters(client: httpx.AsyncClient,
                                                store: Store) -> None:
    await store.set_webhook_endpoints(["http://receiver.test/hook"])
    first = await create(client, **SDK_DEFAULT_CREATE)
    second = await create(client, **SDK_DEFAULT_CREATE)
    await client.put(f"/video/v1/live-streams/{first['id']}/disable")
    await store.queue_webhook_deliveries("http://receiver.test/hook")
    listed = (await client.get("/system/v1/webhook-events")).json()
    WebhookEventListResponse.model_validate(listed)
    assert [(e["type"], e["object"]["id"]) for e in listed["data"]] == [
        ("video.live_stream.disabled", first["id"]),
        ("video.live_stream.created", second["id"]),
        ("video.live_stream.created", first["id"])]
    assert {(e["status"], e["attempts"], e["last_error"]) for e in listed["data"]} == {
        ("pending", 0, None)}
    by_object = (await client.get("/system/v1/webhook-events",
                                  params={"object_id": first["id"]})).json()["data"]
    assert len(by_object) == 2
    by_type = (await client.get("/system/v1/webhook-events", params={
        "type": "video.live_stream.disabled"})).json()["data"]
    assert [e["object"]["id"] for e in by_type] == [first["id"]]
    assert (await client.get("/system/v1/webhook-events",
                             params={"status": "failed"})).json() == {"data": []}
    paged = (await client.get("/system/v1/webhook-events",
                              params={"limit": 2, "page": 2})).json()["data"]
    assert [e["type"] for e in paged] == ["video.live_stream.created"]
    bad = await client.get("/system/v1/webhook-events", params={"status": "lost"})
    assert bad.status_code == 400
    refused = await client.get("/system/v1/webhook-events", auth=httpx.BasicAuth("x", "y"))
    assert refused.status_code == 401

"""The API's JSON request bodies (relay/api/schemas.py), validated as the API validates them:
through the real FastAPI app (`api_app`), so FastAPI's JSON parsing, the strict pydantic
models, the error envelope and the store all see the body.

Input: byte 0 picks the operation (mod 4): create a live stream, update the harness's live
stream (PATCH), add a playback id to it, add a simulcast target to it; the rest is the body.
What a request creates is deleted again, so the store stays small over millions of runs.

Findings: an exception out of the app, a 5xx, a body not in the Mux shape (`api_app`).
"""

from __future__ import annotations

from fuzz.harnesses.api_app import LIVE_STREAMS, api


def check(data: bytes) -> None:
    if not data:
        return
    under_test = api()
    operation, body = data[0] % 4, data[1:]
    stream = f"{LIVE_STREAMS}/{under_test.stream_id}"
    if operation == 0:
        answer = under_test.request("POST", LIVE_STREAMS, body=body)
        if answer.status == 201:
            under_test.request("DELETE", f"{LIVE_STREAMS}/{answer.body['data']['id']}")
    elif operation == 1:
        under_test.request("PATCH", stream, body=body)
    elif operation == 2:
        answer = under_test.request("POST", f"{stream}/playback-ids", body=body)
        if answer.status == 201:
            under_test.request("DELETE",
                               f"{stream}/playback-ids/{answer.body['data']['id']}")
    else:
        answer = under_test.request("POST", f"{stream}/simulcast-targets", body=body)
        if answer.status == 201:
            under_test.request("DELETE",
                               f"{stream}/simulcast-targets/{answer.body['data']['id']}")

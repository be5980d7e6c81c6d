"""The API's query strings and path parameters, through the real FastAPI app (`api_app`):
the list operations' paging and filters (`limit`, `page`, `status`, `stream_key`) and the ids
in resource paths.

Input: byte 0 picks the request (mod 4): list live streams, list assets (the rest is the raw
query string), get a live stream, get an asset (the rest, decoded as UTF-8 the way an ASGI
server percent-decodes a path, is the id).

Findings: an exception out of the app, a 5xx, a body not in the Mux shape (`api_app`).
"""

from __future__ import annotations

from fuzz.harnesses.api_app import LIVE_STREAMS, api

ASSETS = "/video/v1/assets"


def check(data: bytes) -> None:
    if not data:
        return
    under_test = api()
    request, rest = data[0] % 4, data[1:]
    if request == 0:
        under_test.request("GET", LIVE_STREAMS, query=rest)
    elif request == 1:
        under_test.request("GET", ASSETS, query=rest)
    else:
        identifier = rest.decode("utf-8", "replace")
        under_test.request("GET", f"{LIVE_STREAMS if request == 2 else ASSETS}/{identifier}")

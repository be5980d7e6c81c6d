"""Failed API authentication is slowed per address, over real sockets against `relay serve`.

Lower bounds on time are safe to assert (the server cannot answer a failure before its delay);
the one upper bound, that a right token is answered before the slowed failures sent ahead of
it, has seconds of margin.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from relay.api.auth import AUTH_FAILURE_DELAY, AUTH_MAX_SLOWED_PER_ADDRESS
from testkit.relay_process import RelayProcess

TOKEN = ("auth-test", "auth-test-secret-0123456789-abcdefghij")


@dataclass(frozen=True)
class Answer:
    status: int
    error_type: str | None
    finished: float  # time.monotonic() when the answer had arrived


def get(url: str, auth: tuple[str, str] | None) -> Answer:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(
            ":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, None, time.monotonic())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        return Answer(error.code, body["error"]["type"], time.monotonic())


def test_failures_are_slowed_and_a_right_token_is_not(tmp_path: Path) -> None:
    assert AUTH_MAX_SLOWED_PER_ADDRESS > 3  # three failures wait below the cap
    with RelayProcess(tmp_path, token=TOKEN) as relay:
        url = f"{relay.http_url}/video/v1/live-streams"
        with ThreadPoolExecutor(4) as pool:
            began = time.monotonic()
            wrong = [pool.submit(get, url, (TOKEN[0], f"wrong-guess-{n}")) for n in range(3)]
            time.sleep(AUTH_FAILURE_DELAY / 2)
            assert not any(f.done() for f in wrong)  # no failure is answered before its delay
            # The same address, the right token: answered at once, while the failures wait.
            assert get(f"{relay.http_url}/healthz", None).status == 200  # the loop is free
            right = get(url, TOKEN)
            failures = sorted((f.result() for f in wrong), key=lambda a: a.finished)
        assert right.status == 200
        assert right.finished < failures[-1].finished
        assert [f.status for f in failures] == [401, 401, 401]
        assert {f.error_type for f in failures} == {"unauthorized"}
        # The answers to one address's failures go out at least a delay apart.
        for n, failure in enumerate(failures, start=1):
            assert failure.finished - began >= n * AUTH_FAILURE_DELAY
        # No credentials at all is not a guess: 401 at once.
        missing = get(url, None)
        assert missing.status == 401
    assert not any(TOKEN[1] in line or "wrong-guess" in line for line in relay.lines)

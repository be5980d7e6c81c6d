"""Make sure the process may open as many file descriptors as its connection caps allow.

Every connection is a file descriptor, and so are the store, the listeners and the recordings
being written. Linux starts most processes with a soft RLIMIT_NOFILE of 1,024 and a much higher
hard limit; with the default caps (1,000 RTMP, 4,000 HTTP connections) the soft limit would
run out first, and then accept() fails for everyone, the store included. `relay serve` raises
its soft limit as far as the hard limit allows, and says so when even that is too low.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

log = logging.getLogger("relay")

#: Descriptors beyond the connection caps: listeners, the store, recordings, logs.
RESERVED_FILES = 256

Limits = tuple[int, int]


def ensure_file_limit(
    needed: int,
    get: Callable[[], Limits] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE),
    set_: Callable[[Limits], None] = lambda limits: resource.setrlimit(
        resource.RLIMIT_NOFILE, limits),
) -> int:
    """Raise the soft RLIMIT_NOFILE towards `needed` (never above the hard limit, never
    lower than it was); return the soft limit in force, warning when it is below `needed`."""
    soft, hard = get()
    ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            set_((ceiling, hard))
            soft = ceiling
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft,
                        ceiling, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("the connection caps need about %d open files, but the limit is %d: "
                    "raise it (ulimit -n, or LimitNOFILE= in a systemd unit, --ulimit in "
                    "Docker) or lower --rtmp-max-connections and --http-max-connections",
                    needed, soft)
    return soft

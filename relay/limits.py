"""Limits that several layers share, each written once here.

A limit that only one module enforces lives in that module, next to the check; these are
the ones the configuration, the protocols and the API must agree on.
"""

from __future__ import annotations

from typing import Final

#: The largest media frame Relay accepts, in bytes: the default of --rtmp-max-message-size
#: (one RTMP message), the SRT demuxer's PES bound and the access-unit bound behind it. A
#: 4K keyframe at a high bitrate is a few MB; 8 MiB leaves room and bounds what one
#: publisher's partial frame can hold.
MAX_FRAME_SIZE: Final = 8 * 1024 * 1024

#: The longest live session, in seconds: Mux's 12-hour limit, the largest
#: `max_continuous_duration` the API accepts and the largest --max-session-duration.
MAX_SESSION_SECONDS: Final = 43_200

#: Seconds a node may stay silent before the others count it dead (--node-timeout): its
#: heartbeat writes every third of it, and a stream lease lasts it from each renewal. Long
#: enough that a busy database or a GC pause does not kill a healthy node, short enough
#: that a dead node's streams are taken over soon after their reconnect window.
DEFAULT_NODE_TIMEOUT: Final = 10.0

#: Image worker processes (--image-workers; relay.images.pool): each decodes and encodes
#: one image at a time at a low priority and holds ~70 MB (RSS). Two by default, whatever the
#: cores: images must not take the cores ingest and playback need.
DEFAULT_IMAGE_WORKERS: Final = 2
MAX_IMAGE_WORKERS: Final = 32

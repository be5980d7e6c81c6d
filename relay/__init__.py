"""Relay: a self-hosted live-streaming ingest edge.

Encoders push RTMP(S) or SRT, viewers play (LL-)HLS, and applications drive it through a
REST API that is wire-compatible with Mux Video's live-streams API.
"""

import relay._native  # noqa: F401  (fails with a clear message when the build is missing)

__version__ = "0.1.0"

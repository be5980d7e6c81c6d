"""RTMP ingest: handshake, AMF, chunk session (sans-IO) and the asyncio server."""

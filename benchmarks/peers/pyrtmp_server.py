"""pyrtmp's own example server (`SimpleRTMPServer`), accepting publishes and discarding media:
the "nothing but ingest" comparison peer. Runs in pyrtmp's venv, not Relay's.

    PYRTMP_PYTHON benchmarks/peers/pyrtmp_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

from pyrtmp.rtmp import SimpleRTMPServer  # type: ignore[import-not-found]


async def serve(port: int) -> None:
    server = SimpleRTMPServer()
    await server.create(host="127.0.0.1", port=port)
    await server.start()
    print(f"pyrtmp listening on 127.0.0.1:{port}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

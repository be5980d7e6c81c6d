"""SRT ingest: the cffi binding to libsrt, the admission decisions and the listener thread.

`relay.srt.binding` (and so `relay.srt.listener`) raises `SrtUnavailable` on import when the
compiled binding or libsrt itself cannot be loaded; this package itself imports nothing
native, so code can catch that error by importing it from here.
"""

from __future__ import annotations


class SrtUnavailable(ImportError):
    """The SRT binding cannot be loaded: libsrt is not installed, or Relay was built without
    it. The message names the Debian package to install."""

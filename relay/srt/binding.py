"""The cffi binding to libsrt, and the few Python helpers around it that a listener needs.

`ffi` and `lib` are the compiled module's (relay/srt/_build_binding.py lists what `lib`
offers: the libsrt 1.5 calls, option and error constants, SRT_TRACEBSTATS). Every libsrt call
made through `lib` releases the GIL while it runs (cffi's API mode does so), so a call that
blocks in libsrt blocks only its own thread.

libsrt reports errors per thread: a call returns -1 (SRT_ERROR) or SRT_INVALID_SOCK and
`srt_getlasterror` on the same thread says why; `SrtError.last` reads it into an exception.

Importing this module raises `relay.srt.SrtUnavailable` when the binding cannot load (most
often: libsrt is not installed, whose Debian package is named in the message).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from relay.srt import SrtUnavailable

try:
    from relay.srt._libsrt import ffi, lib
except ImportError as exc:  # the shared library or the compiled module is missing
    raise SrtUnavailable(
        f"SRT is unavailable: the libsrt binding did not load ({exc}); install Debian's "
        "libsrt1.5-openssl (apt-get install libsrt1.5-openssl), or build Relay with "
        "libsrt-openssl-dev installed, or turn SRT off with --srt-port 0"
    ) from exc

__all__ = [
    "SRT_REJECT_CODE_MAX",
    "ListenHook",
    "SrtError",
    "SrtUnavailable",
    "accept",
    "bind",
    "bind_acquire",
    "bind_shared",
    "connect",
    "ffi",
    "get_int",
    "get_str",
    "last_error",
    "lib",
    "libsrt_version",
    "reject_reason_text",
    "set_int",
    "set_listen_callback",
    "set_str",
    "split_sockaddr",
    "udp_socket",
]

log = logging.getLogger("relay.srt")

#: Reject reasons an application may set: 1000..1999 predefined (HTTP-like, access_control.h),
#: 2000..2999 user-defined; below 1000 are libsrt's own (SRT_REJECT_REASON).
SRT_REJECT_CODE_MAX = 2999

#: SRTO_STREAMID holds at most 512 bytes (SRT access control, "Stream ID" field).
STREAMID_MAX_BYTES = 512


class SrtError(OSError):
    """A libsrt call failed; `code` is its SRT_ERRNO, the message libsrt's text for it."""

    def __init__(self, call: str, code: int, text: str) -> None:
        super().__init__(f"{call}: {text} (SRT error {code})")
        self.call = call
        self.code = code
        self.text = text

    @classmethod
    def last(cls, call: str) -> SrtError:
        """The error of this thread's last failed libsrt call."""
        code, text = last_error()
        return cls(call, code, text)


def last_error() -> tuple[int, str]:
    """This thread's last libsrt error: (SRT_ERRNO, libsrt's text for it)."""
    code = int(lib.srt_getlasterror(ffi.NULL))
    text = ffi.string(lib.srt_getlasterror_str()).decode("utf-8", "replace")
    return code, text


def libsrt_version() -> str:
    """The version of the libsrt loaded at run time, e.g. "1.5.1"."""
    version = int(lib.srt_getversion())
    return f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"


def reject_reason_text(code: int) -> str:
    """libsrt's words for a reject reason below 1000; others are named by their number."""
    if 0 <= code < lib.SRT_REJC_PREDEFINED:
        return str(ffi.string(lib.srt_rejectreason_str(code)).decode("utf-8", "replace"))
    return f"application reject code {code}"


# -- socket options ----------------------------------------------------------------------


def set_int(sock: int, option: int, value: int) -> None:
    """Set an int-valued option (booleans too: libsrt reads them as int)."""
    box = ffi.new("int *", value)
    if lib.srt_setsockflag(sock, option, box, ffi.sizeof("int")) == lib.SRT_ERROR:
        raise SrtError.last(f"srt_setsockflag({option}={value})")


def set_str(sock: int, option: int, value: str) -> None:
    """Set a string option (SRTO_PASSPHRASE, SRTO_STREAMID): its UTF-8 bytes, no NUL."""
    data = value.encode("utf-8")
    if lib.srt_setsockflag(sock, option, data, len(data)) == lib.SRT_ERROR:
        # The value may be a secret (a passphrase): it never reaches the message.
        raise SrtError.last(f"srt_setsockflag({option}, <{len(data)} bytes>)")


def get_int(sock: int, option: int) -> int:
    box = ffi.new("int *")
    size = ffi.new("int *", ffi.sizeof("int"))
    if lib.srt_getsockflag(sock, option, box, size) == lib.SRT_ERROR:
        raise SrtError.last(f"srt_getsockflag({option})")
    return int(box[0])


def get_str(sock: int, option: int, limit: int = STREAMID_MAX_BYTES) -> str:
    """A string option; bytes that are not UTF-8 become U+FFFD (they match no stream key)."""
    buf = ffi.new("char[]", limit + 1)
    size = ffi.new("int *", limit + 1)
    if lib.srt_getsockflag(sock, option, buf, size) == lib.SRT_ERROR:
        raise SrtError.last(f"srt_getsockflag({option})")
    return bytes(ffi.buffer(buf, size[0])).decode("utf-8", "replace")


# -- addresses ---------------------------------------------------------------------------


def split_sockaddr(sa: Any) -> tuple[str, int] | None:
    """(host, port) of a `struct sockaddr *` from libsrt; None for NULL or another family."""
    packed = ffi.new("unsigned char[16]")
    port = ffi.new("int *")
    family = lib.relay_sockaddr_split(sa, packed, port)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, bytes(ffi.buffer(packed, 4))), int(port[0])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, bytes(ffi.buffer(packed, 16))), int(port[0])
    return None


def _sockaddr(host: str, port: int, *, passive: bool) -> tuple[int, Any, int]:
    """(family, a `struct sockaddr_storage *` holding the address, its length)."""
    flags = socket.AI_NUMERICSERV | (socket.AI_PASSIVE if passive else 0)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    except socket.gaierror as exc:
        raise OSError(f"SRT: cannot resolve host {host!r}: {exc}; give an IP address or a "
                      "resolvable name") from exc
    family, _, _, _, address = infos[0]
    packed = socket.inet_pton(family, str(address[0]))
    storage = ffi.new("struct sockaddr_storage *")
    length = int(lib.relay_sockaddr_make(family, packed, port, storage))
    if length < 0:
        raise OSError(f"SRT: host {host!r} is neither IPv4 nor IPv6")
    return family, storage, length


def bind(sock: int, host: str, port: int) -> None:
    """Bind an SRT socket to `host` (an address or a name resolving to one) and UDP `port`."""
    family, storage, length = _sockaddr(host, port, passive=True)
    if family == socket.AF_INET6:
        # Listening on "::" takes IPv4 callers too, as the other listeners do.
        set_int(sock, lib.SRTO_IPV6ONLY, 0)
    if lib.srt_bind(sock, ffi.cast("struct sockaddr *", storage), length) == lib.SRT_ERROR:
        raise SrtError.last(f"srt_bind({host}:{port})")


def udp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A UDP socket bound to `host` and `port`, for an SRT listener to take over with
    `bind_acquire`. "::" takes IPv4 callers too, as `bind` does. `reuse_port` sets
    SO_REUSEPORT, so that the workers of `relay serve --workers N` all listen on one port:
    Linux hashes each datagram's addresses and ports to one of the sockets, so a caller's
    handshake and media all reach the worker that accepted it (socket(7), SO_REUSEPORT)."""
    flags = socket.AI_NUMERICSERV | socket.AI_PASSIVE
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    except socket.gaierror as exc:
        raise OSError(f"SRT: cannot resolve host {host!r}: {exc}; give an IP address or a "
                      "resolvable name") from exc
    family, type_, proto, _, address = infos[0]
    udp = socket.socket(family, type_, proto)
    try:
        if reuse_port:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        udp.bind(address)
    except OSError:
        udp.close()
        raise
    return udp


def bind_acquire(sock: int, udp: socket.socket) -> int:
    """Bind an SRT socket to a duplicate of `udp`'s descriptor (srt_bind_acquire, libsrt >=
    1.4.2) and return that duplicate: libsrt owns it from then on and closes it when it
    drops the socket's multiplexer, while `udp` stays open for its owner."""
    fd = os.dup(udp.fileno())
    if lib.srt_bind_acquire(sock, fd) == lib.SRT_ERROR:
        os.close(fd)
        raise SrtError.last(f"srt_bind_acquire(UDP {udp.getsockname()!r})")
    return fd


def bind_shared(sock: int, host: str, port: int) -> None:
    """Bind an SRT socket as `bind` does, on a UDP socket made here with SO_REUSEPORT (see
    `udp_socket`); libsrt has no such option, `srt_bind_acquire` takes a bound socket."""
    udp = udp_socket(host, port, reuse_port=True)
    with udp:
        bind_acquire(sock, udp)


def connect(sock: int, host: str, port: int) -> None:
    """Connect an SRT socket as a caller (blocking unless SRTO_RCVSYN is off); Relay's own
    tests use it to read what a listener answers (srt_getrejectreason after a failure)."""
    _, storage, length = _sockaddr(host, port, passive=False)
    if lib.srt_connect(sock, ffi.cast("struct sockaddr *", storage), length) == lib.SRT_ERROR:
        raise SrtError.last(f"srt_connect({host}:{port})")


def accept(listener: int) -> tuple[int, tuple[str, int] | None] | None:
    """The next connection waiting on a non-blocking listener: (socket, (host, port));
    None when none is waiting."""
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("int *", ffi.sizeof("struct sockaddr_storage"))
    sock = int(lib.srt_accept(listener, ffi.cast("struct sockaddr *", storage), length))
    if sock == lib.SRT_INVALID_SOCK:
        code, _ = last_error()
        if code == lib.SRT_EASYNCRCV:
            return None
        raise SrtError.last("srt_accept")
    return sock, split_sockaddr(ffi.cast("struct sockaddr *", storage))


# -- the listen callback -----------------------------------------------------------------

#: What a listener gives `set_listen_callback`: called with the new socket, the caller's
#: (host, port) and its stream id; returns 0 to go on with the handshake, -1 to reject it
#: (after setting the reject reason on the socket).
ListenHook = Callable[[int, tuple[str, int] | None, str], int]


@ffi.def_extern(error=-1)  # type: ignore[untyped-decorator]
def relay_srt_listen_hook(opaque: Any, ns: int, hsversion: int, peeraddr: Any,
                          streamid: Any) -> int:
    """libsrt's listen callback (srt_listen_callback), on libsrt's receive thread.

    Anything that escapes from here makes cffi return `error=-1`: the caller is rejected,
    never let in by accident."""
    hook: ListenHook = ffi.from_handle(opaque)
    sid = ""
    if streamid != ffi.NULL:
        sid = ffi.string(streamid, STREAMID_MAX_BYTES).decode("utf-8", "replace")
    return hook(int(ns), split_sockaddr(peeraddr), sid)


def set_listen_callback(listener: int, hook: ListenHook) -> Any:
    """Install `hook` as the listen callback of `listener`.

    Returns the cffi handle that carries `hook` through libsrt: the caller must keep it
    alive for as long as libsrt may call the hook (until the listener is closed)."""
    handle = ffi.new_handle(hook)
    if lib.srt_listen_callback(listener, lib.relay_srt_listen_hook, handle) == lib.SRT_ERROR:
        raise SrtError.last("srt_listen_callback")
    return handle

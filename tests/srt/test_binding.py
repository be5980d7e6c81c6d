"""The cffi binding itself: loading (and failing to load), versions, options, addresses,
reject codes, limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import relay
from relay.srt import SrtUnavailable
from relay.srt.binding import (
    SrtError,
    bind,
    ffi,
    get_int,
    get_str,
    lib,
    libsrt_version,
    set_int,
    set_str,
    split_sockaddr,
)
from relay.srt.listener import MAX_PAYLOAD, SrtLimits, reject_code


@pytest.fixture
def sock() -> Iterator[int]:
    assert lib.srt_startup() != lib.SRT_ERROR
    handle = int(lib.srt_create_socket())
    assert handle != lib.SRT_INVALID_SOCK
    try:
        yield handle
    finally:
        lib.srt_close(handle)
        lib.srt_cleanup()


def test_libsrt_version_is_the_loaded_library() -> None:
    version = libsrt_version()
    assert re.fullmatch(r"1\.\d+\.\d+", version)
    assert int(lib.srt_getversion()) == int.from_bytes(
        bytes(int(part) for part in ("0." + version).split(".")), "big")


def test_without_libsrt_the_import_names_the_debian_package() -> None:
    # A clean interpreter where the compiled module cannot be imported, as when libsrt.so.1.5
    # is missing (the dynamic loader's failure is an ImportError like this one).
    code = ("import sys; sys.modules['relay.srt._libsrt'] = None\n"
            "try:\n    import relay.srt.listener\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    root = Path(relay.__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, timeout=60,
                            check=True)
    assert result.stdout.startswith("SrtUnavailable ")
    assert "libsrt1.5-openssl" in result.stdout and "--srt-port 0" in result.stdout
    assert issubclass(SrtUnavailable, ImportError)


def test_options_round_trip(sock: int) -> None:
    set_int(sock, lib.SRTO_RCVLATENCY, 345)
    assert get_int(sock, lib.SRTO_RCVLATENCY) == 345
    set_int(sock, lib.SRTO_TRANSTYPE, lib.SRTT_LIVE)
    assert get_int(sock, lib.SRTO_MESSAGEAPI) == 1  # live mode is message mode
    set_str(sock, lib.SRTO_STREAMID, "#!::r=key,m=publish")
    assert get_str(sock, lib.SRTO_STREAMID) == "#!::r=key,m=publish"
    set_int(sock, lib.SRTO_PBKEYLEN, 16)
    assert get_int(sock, lib.SRTO_PBKEYLEN) == 16


def test_a_refused_option_raises_without_the_value(sock: int) -> None:
    # libsrt takes passphrases of 10..79 characters; the error must not echo the secret.
    with pytest.raises(SrtError) as failure:
        set_str(sock, lib.SRTO_PASSPHRASE, "short")
    assert "short" not in str(failure.value)
    assert failure.value.code == lib.SRT_EINVPARAM


def test_bind_and_split_sockaddr_ipv4_and_ipv6(sock: int) -> None:
    bind(sock, "127.0.0.1", 0)
    storage = ffi.new("struct sockaddr_storage *")
    length = ffi.new("int *", ffi.sizeof("struct sockaddr_storage"))
    name = ffi.cast("struct sockaddr *", storage)
    assert lib.srt_getsockname(sock, name, length) == 0
    host, port = split_sockaddr(name) or ("", 0)
    assert host == "127.0.0.1" and port > 0
    assert split_sockaddr(ffi.NULL) is None

    six = int(lib.srt_create_socket())
    try:
        try:
            bind(six, "::1", 0)
        except SrtError:
            pytest.skip("no IPv6 loopback here")
        length[0] = ffi.sizeof("struct sockaddr_storage")
        assert lib.srt_getsockname(six, name, length) == 0
        host, port = split_sockaddr(name) or ("", 0)
        assert host == "::1" and port > 0
    finally:
        lib.srt_close(six)


def test_bind_to_an_unresolvable_host_says_so(sock: int) -> None:
    with pytest.raises(OSError, match="cannot resolve host"):
        bind(sock, "no-such-host.invalid", 0)


@pytest.mark.parametrize(("code", "sent"), [
    (403, 1403), (404, 1404), (409, 1409), (429, 1429), (1403, 1403), (2001, 2001),
    (0, 1500), (-1, 1500), (3000, 1500), (999, 1999),
])
def test_reject_codes(code: int, sent: int) -> None:
    assert reject_code(code) == sent


def test_limits_refuse_buffers_below_one_payload() -> None:
    with pytest.raises(ValueError, match="recv_slab_bytes 1000"):
        SrtLimits(recv_slab_bytes=1000)
    with pytest.raises(ValueError, match="max_pending_bytes 10"):
        SrtLimits(max_pending_bytes=10)
    assert SrtLimits(recv_slab_bytes=MAX_PAYLOAD).recv_slab_bytes == MAX_PAYLOAD

"""--simulcast-ca-file: a PEM CA bundle trusted for rtmps:// targets beside the system store;
a missing or unusable file stops the start with a message naming the option. The context
itself is made on the first rtmps:// connection, in a thread (relay.simulcast.tls)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from relay.app import StartupError, load_simulcast_tls
from relay.config import ConfigError
from relay.simulcast import tls as target_tls
from relay.simulcast.pusher import TargetError
from relay.simulcast.tls import TargetTls
from tests.unit.helpers.config import settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=target.test", "-addext", "subjectAltName=DNS:target.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def handshake(client: ssl.SSLContext, cert: Path, key: Path, host: str) -> None:
    """A TLS handshake in memory between `client` and a server presenting `cert`."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    c = client.wrap_bio(pipes[0], pipes[1], server_hostname=host)
    s = server.wrap_bio(pipes[2], pipes[3], server_side=True)
    done = {c: False, s: False}
    for _ in range(20):
        for side, outgoing, peer_in in ((c, pipes[1], pipes[2]), (s, pipes[3], pipes[0])):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(outgoing.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_the_option_from_flag_and_env(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    assert settings().simulcast_ca_file is None
    assert settings("--simulcast-ca-file", str(cert)).simulcast_ca_file == cert
    assert settings(RELAY_SIMULCAST_CA_FILE=str(cert)).simulcast_ca_file == cert


def test_a_missing_file_is_an_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--simulcast-ca-file=.*no such file"):
        settings("--simulcast-ca-file", str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"^RELAY_SIMULCAST_CA_FILE=.*no such file"):
        settings(RELAY_SIMULCAST_CA_FILE=str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"not a certificate\n",
                                     b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                     b"-----END CERTIFICATE-----\n"])
def test_an_unusable_file_stops_the_start_naming_the_option(
        tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    with pytest.raises(StartupError, match="--simulcast-ca-file") as raised:
        load_simulcast_tls(settings("--simulcast-ca-file", str(bad)))
    assert str(bad) in str(raised.value)


def test_the_bundle_is_trusted_beside_the_system_store(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    default = asyncio.run(load_simulcast_tls(settings()).context())
    assert default.verify_mode is ssl.CERT_REQUIRED and default.check_hostname
    system = default.cert_store_stats()["x509_ca"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(default, cert, key, "target.test")
    trusting = asyncio.run(load_simulcast_tls(settings("--simulcast-ca-file", str(cert)))
                           .context())
    assert trusting.verify_mode is ssl.CERT_REQUIRED and trusting.check_hostname
    handshake(trusting, cert, key, "target.test")
    # In addition to the system's CAs, not instead of them.
    assert trusting.cert_store_stats()["x509_ca"] == system + 1
    # The name is still checked.
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname"):
        handshake(trusting, cert, key, "other.test")


def test_the_context_is_made_once_on_first_use_in_a_thread(
        certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _ = certificate
    made_on: list[str] = []

    def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
        made_on.append(threading.current_thread().name)
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    monkeypatch.setattr(target_tls, "client_context", client_context)
    tls = load_simulcast_tls(settings("--simulcast-ca-file", str(cert)))
    assert made_on == [] and not tls.made  # start-up read the bundle, made no context

    async def first_pushes() -> list[ssl.SSLContext]:
        return await asyncio.gather(*(tls.context() for _ in range(3)))

    contexts = asyncio.run(first_pushes())
    assert len(made_on) == 1 and made_on[0] != threading.current_thread().name
    assert contexts[0] is contexts[1] is contexts[2] and tls.made
    assert asyncio.run(tls.context()) is contexts[0]
    assert len(made_on) == 1


def test_a_bundle_gone_after_the_start_fails_the_attempt_and_the_next_one_retries(
        certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = certificate
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(cert.read_bytes())
    tls = load_simulcast_tls(settings("--simulcast-ca-file", str(bundle)))
    bundle.unlink()
    with pytest.raises(TargetError, match=r"ca\.pem") as raised:
        asyncio.run(tls.context())
    assert raised.value.severity == "normal" and not tls.made
    bundle.write_bytes(cert.read_bytes())
    assert asyncio.run(tls.context()).cert_store_stats()["x509_ca"] >= 1
    assert tls.made


def test_without_a_bundle_nothing_is_read_at_start_up() -> None:
    tls = load_simulcast_tls(settings())
    assert isinstance(tls, TargetTls) and tls.ca_file is None and not tls.made

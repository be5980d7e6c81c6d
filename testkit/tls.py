"""A throwaway self-signed certificate for the tests' TLS listeners (RTMPS, HTTPS) and TLS
peers, made by the openssl command line (`make test` installs it)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path, *, alt_name: str | None = None) -> tuple[Path, Path]:
    """cert.pem and key.pem in `folder`: RSA 2048, CN=localhost, valid for a day;
    `alt_name` (such as "DNS:localhost" or "IP:127.0.0.1") for clients that verify it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    extra = ["-addext", f"subjectAltName={alt_name}"] if alt_name else []
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", *extra, "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key

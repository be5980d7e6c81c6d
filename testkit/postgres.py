"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` binaries (`make test`
installs them), `initdb` into a temporary directory and `pg_ctl` on 127.0.0.1, a free port and
a unix socket in that directory, as an unprivileged user when the tests run as root
(PostgreSQL refuses to run as root). Each test gets a database of its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# The user the cluster runs as when the tests run as root: it needs no home and no shell.
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "relay"
# How long `pg_ctl start`/`stop` may take on a loaded two-core machine before the tests fail.
PG_CTL_TIMEOUT_S = 120

MISSING = ("the PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make test` "
           "installs Debian's postgresql package (or: apt-get install postgresql)")


def find_bindir() -> Path:
    """The directory of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if versions:
        return versions[-1].parent
    raise RuntimeError(MISSING)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One running cluster; `url(db)` names a database of it for SQLAlchemy with asyncpg."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = UNPRIVILEGED_USER
            entry = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root,
                              timeout=PG_CTL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
                               f"\nserver log: {log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "-o", options)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w",
                          "-t", str(PG_CTL_TIMEOUT_S))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def postmaster_pid(self) -> int:
        """The running server's process id (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)


def running_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster, yield it, stop and remove it (the body of a session fixture)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

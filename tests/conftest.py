"""Session services for the whole suite: a real Apache Kafka broker and a real redis-server.

Both are started through the project's own scripts (``scripts/kafka.sh``,
``scripts/redis.sh``) on free loopback ports, unless ``BREAKOUT_KAFKA`` /
``BREAKOUT_REDIS`` point at running ones. Every test that touches them gets
unique topic names, consumer groups and Redis key prefixes from ``names``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from breakout.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SERVICES: dict[str, str] = {}


def free_port(span: int = 1) -> int:
    """A loopback port p such that p .. p+span-1 are all free right now."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + span < 65536 and all(_free(p) for p in range(port, port + span)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _script(*args: str) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts" / args[0]), *args[1:]], check=True, env=env)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker."""
    if os.environ.get("BREAKOUT_KAFKA"):
        SERVICES["kafka"] = f"{os.environ['BREAKOUT_KAFKA']} (from BREAKOUT_KAFKA)"
        yield os.environ["BREAKOUT_KAFKA"]
        return
    port = free_port(span=2)  # the controller listens on port + 1
    directory = tmp_path_factory.mktemp("kafka")
    _script("kafka.sh", "start", str(port), str(directory))
    version = next((ROOT / "scripts" / "kafka").glob("pom.xml")).read_text()
    version = version.split("<kafka.version>")[1].split("<")[0]
    SERVICES["kafka"] = f"Apache Kafka {version} on 127.0.0.1:{port} (started by scripts/kafka.sh)"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _script("kafka.sh", "stop", str(directory))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server."""
    if os.environ.get("BREAKOUT_REDIS"):
        SERVICES["redis"] = f"{os.environ['BREAKOUT_REDIS']} (from BREAKOUT_REDIS)"
        yield os.environ["BREAKOUT_REDIS"]
        return
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    _script("redis.sh", "start", str(port), str(directory))
    SERVICES["redis"] = f"redis-server on 127.0.0.1:{port} (started by scripts/redis.sh)"
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _script("redis.sh", "stop", str(directory))


@dataclass(frozen=True)
class Names:
    """Names no other test uses: a topic, an app id (consumer group, Redis prefix)."""

    topic: str
    app_id: str


@pytest.fixture
def names() -> Names:
    token = uuid.uuid4().hex[:10]
    return Names(topic=f"cdrs-{token}", app_id=f"breakout-{token}")


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, names: Names, tmp_path: Path) -> Settings:
    """Settings pointing at the session's services, with this test's own names."""
    return load_settings(
        kafka=kafka_bootstrap,
        redis=redis_url,
        topic=names.topic,
        app_id=names.app_id,
        data_dir=tmp_path / "data",
        store="memory://",
        rebalance_timeout=10,
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SERVICES:
        terminalreporter.section("integration services")
        for name, description in SERVICES.items():
            terminalreporter.write_line(f"{name}: {description}")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis, closed after the test."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()

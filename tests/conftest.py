"""Session services for the whole suite: a real Apache Kafka broker and a real redis-server.

Both are started through the project's own scripts (``scripts/kafka.sh``,
``scripts/redis.sh``) on free loopback ports, unless ``BREAKOUT_KAFKA`` /
``BREAKOUT_REDIS`` point at running ones. A real Redis Cluster (3 primaries) is
started the same way, only for tests that ask for ``redis_cluster_url``, unless
``BREAKOUT_REDIS_CLUSTER`` points at one. Every test that touches them gets
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

from breakout.redis_client import Client, connect
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


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (``redis+cluster://host:port``) of a real Redis Cluster: 3 primaries, no replicas."""
    if os.environ.get("BREAKOUT_REDIS_CLUSTER"):
        SERVICES["redis cluster"] = f"{os.environ['BREAKOUT_REDIS_CLUSTER']} (from BREAKOUT_REDIS_CLUSTER)"
        yield os.environ["BREAKOUT_REDIS_CLUSTER"]
        return
    port = _cluster_port()
    directory = tmp_path_factory.mktemp("redis-cluster")
    _script("redis.sh", "cluster-start", str(port), str(directory))
    SERVICES["redis cluster"] = (
        f"Redis Cluster, 3 primaries on 127.0.0.1:{port}..{port + 2} (started by scripts/redis.sh)"
    )
    try:
        yield f"redis+cluster://127.0.0.1:{port}"
    finally:
        _script("redis.sh", "cluster-stop", str(directory))


def _cluster_port() -> int:
    """A port p for 3 cluster nodes: p .. p+2 and their bus ports p+10000 .. are free."""
    while True:
        port = free_port(span=3)
        if port + 2 <= 55535 and all(_free(p + 10000) for p in range(port, port + 3)):
            return port


@dataclass(frozen=True)
class Names:
    """Names no other test uses: a topic, an app id (consumer group, Redis prefix)."""

    topic: str
    app_id: str


@pytest.fixture
def names() -> Names:
    token = uuid.uuid4().hex[:10]
    return Names(topic=f"cdrs-{token}", app_id=f"breakout-{token}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``each_redis`` run with ``settings`` on a single Redis, then on a cluster."""
    if metafunc.definition.get_closest_marker("each_redis") and "settings" in metafunc.fixturenames:
        metafunc.parametrize("settings", ["single", "cluster"], indirect=True)


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, kafka_bootstrap: str, redis_url: str, names: Names, tmp_path: Path
) -> Settings:
    """Settings pointing at the session's services, with this test's own names (and, for a
    test marked ``each_redis``, at the Redis Cluster in its ``cluster`` run)."""
    cluster = getattr(request, "param", "single") == "cluster"
    return load_settings(
        kafka=kafka_bootstrap,
        redis=request.getfixturevalue("redis_cluster_url") if cluster else redis_url,
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
async def redis(settings: Settings) -> AsyncIterator[Client]:
    """A client of the test's Redis (``settings.redis``), closed after the test."""
    client = connect(settings.redis)
    yield client
    await client.aclose()

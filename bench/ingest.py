"""Ingest throughput of one worker process, against a real Apache Kafka broker and Redis.

    .venv/bin/python bench/ingest.py [--runs 3] [--single 100000] [--batched 500000] [--wide]
        [--cluster]

Starts Kafka and Redis through scripts/kafka.sh and scripts/redis.sh (or uses
BREAKOUT_KAFKA / BREAKOUT_REDIS); with ``--cluster`` Redis is a 3-primary Redis Cluster,
its CPU and commands summed over the primaries and the busiest one shown. It
pre-publishes synthetic CDRs, then times one ``breakout worker`` from its first
committed ingest offset until the Redis mirror's watermarks cover everything: validated,
aggregated, stored in the tables and mirrored.
In the same run it times the baseline, bench/naive_worker.py (a Faust agent doing one
table increment per event), and prints medians and the ratios against the baseline, with
the worker's peak RSS and the Redis CPU per CDR (``INFO cpu`` before and after).

The traffic: 1,000 customers sending 5,000 CDRs a second between them, uniformly (no
big accounts, which would make rows repeat more and the bench easier). Each customer calls
its own 30 of the 64 dial prefixes through its own 3 of 4 providers, as accounts do: they
serve a few dozen destinations over a few routes. That is up to ~90 rows per customer and
bucket. ``--wide`` gives every customer every prefix and provider (up to ~220 rows each),
the mix used before: the worst case for the per-bucket table writes and the Redis mirror,
which grow with the rows a customer has, not with the CDRs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio.cluster import RedisCluster

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from breakout.redis_client import Client, connect, is_cluster  # noqa: E402
from breakout.redis_layout import Layout, decode_watermarks  # noqa: E402
from breakout.synthetic import Profile, cdr_stream  # noqa: E402

PARTITIONS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_topic(kafka: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


EVENT_RATE = 5_000  # CDRs per second of event time: a busy platform's live traffic
CUSTOMERS = 1_000


PROFILE = Profile(customers=CUSTOMERS, prefixes_per_customer=30, providers_per_customer=3)
WIDE_PROFILE = Profile(customers=CUSTOMERS)


async def prepublish(
    kafka: str, topic: str, total: int, per_message: int, profile: Profile = PROFILE
) -> None:
    """``total`` CDRs in messages of ``per_message`` CDRs, keyed by customer, as a platform with
    ``CUSTOMERS`` accounts sending ``EVENT_RATE`` CDRs a second would produce them."""
    await create_topic(kafka, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, linger_ms=50, max_batch_size=1 << 20, max_request_size=16 << 20
    )
    await producer.start()
    start = time.time() - total / EVENT_RATE - 60
    cdrs = cdr_stream(seed=1, start_time=start, rate=EVENT_RATE, profile=profile)
    try:
        futures = []
        for _ in range(total // per_message):
            chunk = [next(cdrs) for _ in range(per_message)]
            value = orjson.dumps(chunk[0] if per_message == 1 else chunk)
            futures.append(await producer.send(topic, value, key=chunk[0]["customer_id"].encode()))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(admin: AIOKafkaAdminClient, group: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


async def end_offsets(kafka: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def start_worker(kafka: str, redis_url: str, topic: str, app_id: str) -> subprocess.Popen[bytes]:
    """One ``breakout worker`` process with its own app id (so it reads the topic from the start)."""
    data_dir = tempfile.mkdtemp(prefix="breakout-bench-")
    env = dict(
        os.environ,
        BREAKOUT_KAFKA=kafka,
        BREAKOUT_REDIS=redis_url,
        BREAKOUT_TOPIC=topic,
        BREAKOUT_APP_ID=app_id,
        BREAKOUT_DATA_DIR=data_dir,
        BREAKOUT_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: the worker's ingest process, for one."""
    tree, stack = [], [pid]
    while stack:
        member = stack.pop()
        tree.append(member)
        try:
            for task in Path(f"/proc/{member}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return tree


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory so far (``VmHWM``) of ``pid`` and of each live descendant,
    summed, in MB: at least the peak of their sum."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    if not total:
        raise RuntimeError(f"no VmHWM for process {pid}")
    return total / 1024


def machine_seconds() -> tuple[float, float]:
    """CPU seconds, summed over the cores, the machine has been busy and had stolen since boot.

    Steal is time a virtual machine's cores were runnable but the hypervisor ran other
    guests: on a shared machine it is why the same run is sometimes several times slower,
    so a figure is only read beside it.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid``, of its reaped children and of its live descendants."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PipelineRun:
    """One timed run of the worker over a pre-published topic."""

    rate: float  # CDR/s, first commit → fully mirrored
    peak_rss_mb: float  # the worker's processes', by then
    worker_us: float  # CPU per CDR over the span: the worker process
    broker_us: float | None  # the Kafka broker (None: not started by this bench)
    redis_us: float  # Redis (``INFO cpu``; the bench's own polls included), all shards
    redis_busiest_us: float  # the busiest shard's (= redis_us on a single Redis)
    redis_commands: str  # where Redis spent it, per command


async def redis_infos(client: Client, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the Redis server, or of every primary of a cluster."""
    if isinstance(client, RedisCluster):
        return list((await client.info(section, target_nodes=RedisCluster.PRIMARIES)).values())
    return [await client.info(section)]


async def redis_cpu_seconds(client: Client) -> list[float]:
    """CPU seconds each Redis server (each primary of a cluster) has used (``INFO cpu``:
    user + system, all threads)."""
    return [
        float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        for info in await redis_infos(client, "cpu")
    ]


async def redis_command_us(client: Client) -> dict[str, float]:
    """µs Redis spent per command since the last ``CONFIG RESETSTAT`` (``INFO commandstats``,
    summed over a cluster's primaries; commands a script calls are counted both on their
    own and in the script's figure)."""
    spent: Counter[str] = Counter()
    for stats in await redis_infos(client, "commandstats"):
        spent.update({name.removeprefix("cmdstat_"): float(value["usec"]) for name, value in stats.items()})
    return dict(spent)


async def reset_redis_stats(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.config_resetstat()


async def time_pipeline(
    kafka: str, redis_url: str, topic: str, total: int, messages: int, broker_pid: int | None
) -> PipelineRun:
    """One worker over a pre-published topic, from its first commit until fully mirrored:
    CDR/s, and what the worker, the broker and Redis spent per CDR over that span."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    worker = start_worker(kafka, redis_url, topic, app_id)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    client = connect(redis_url)
    try:
        started = None
        while True:  # ingest: first commit starts the clock, all offsets committed ends it
            consumed = await committed_total(admin, f"{app_id}-ingest")
            if consumed and started is None:
                started = time.perf_counter()
                await reset_redis_stats(client)
                redis_cpu = await redis_cpu_seconds(client)
                worker_cpu = cpu_seconds(worker.pid)
                broker_cpu = cpu_seconds(broker_pid) if broker_pid else 0.0
            if consumed >= messages:
                break
            if worker.poll() is not None:
                raise RuntimeError("worker exited")
            await asyncio.sleep(0.02)
        assert started is not None
        ends = await end_offsets(kafka, f"{app_id}-normalized")
        while True:  # aggregate + mirror: every normalized message applied and mirrored
            watermarks = decode_watermarks(await client.hgetall(Layout(app_id).watermarks))
            marks = {p: mark.offset for p, mark in watermarks.items()}
            if all(end == 0 or marks.get(p, -1) >= end - 1 for p, end in ends.items()):
                elapsed = time.perf_counter() - started
                shards = [
                    (after - before) * 1e6 / total
                    for before, after in zip(redis_cpu, await redis_cpu_seconds(client), strict=True)
                ]
                worker_us = (cpu_seconds(worker.pid) - worker_cpu) * 1e6 / total
                broker_us = (cpu_seconds(broker_pid) - broker_cpu) * 1e6 / total if broker_pid else None
                commands = sorted((await redis_command_us(client)).items(), key=lambda c: -c[1])
                spent = ", ".join(f"{name} {us / total:.1f}" for name, us in commands[:5])
                return PipelineRun(
                    total / elapsed,
                    peak_rss_mb(worker.pid),
                    worker_us,
                    broker_us,
                    sum(shards),
                    max(shards),
                    spent,
                )
            await asyncio.sleep(0.02)
    finally:
        worker.terminate()
        worker.wait()
        await admin.close()
        await client.aclose()


def time_naive(kafka: str, topic: str, total: int) -> float:
    scratch = tempfile.TemporaryDirectory(prefix="breakout-naive-")
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "naive_worker.py"),
            "--kafka",
            kafka,
            "--topic",
            topic,
            "--app-id",
            f"naive-{uuid.uuid4().hex[:8]}",
            "--expect",
            str(total),
            "--datadir",
            scratch.name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "RESULT " in line:  # after the escape codes of Faust's start-up spinner
                return float(line.split("RESULT ")[1])
        raise RuntimeError("naive worker exited without a result")
    finally:
        process.terminate()
        process.wait()
        scratch.cleanup()


def start_services(workdir: Path, cluster: bool = False) -> tuple[str, str, list[list[str]]]:
    """Kafka and Redis (a 3-primary cluster if ``cluster``): their addresses and how to stop them."""
    if os.environ.get("BREAKOUT_KAFKA") and os.environ.get("BREAKOUT_REDIS"):
        return os.environ["BREAKOUT_KAFKA"], os.environ["BREAKOUT_REDIS"], []
    kafka_port = kafka_port_pair()
    redis_port = cluster_port() if cluster else free_port()
    subprocess.run(
        [str(ROOT / "scripts/kafka.sh"), "start", str(kafka_port), str(workdir / "kafka")], check=True
    )
    redis = ["cluster-start", "cluster-stop"] if cluster else ["start", "stop"]
    subprocess.run(
        [str(ROOT / "scripts/redis.sh"), redis[0], str(redis_port), str(workdir / "redis")], check=True
    )
    stops = [
        [str(ROOT / "scripts/kafka.sh"), "stop", str(workdir / "kafka")],
        [str(ROOT / "scripts/redis.sh"), redis[1], str(workdir / "redis")],
    ]
    url = f"redis+cluster://127.0.0.1:{redis_port}" if cluster else f"redis://127.0.0.1:{redis_port}/0"
    return f"127.0.0.1:{kafka_port}", url, stops


def kafka_port_pair() -> int:
    """A port p with p + 1 free too: the broker's controller listens there (scripts/kafka.sh)."""
    while True:
        port = free_port()
        if port < 65535 and _free(port + 1):
            return port


def cluster_port() -> int:
    """A port p for 3 cluster nodes: p .. p+2 and their bus ports (p+10000 …, so p ≤ 55533) free."""
    while True:
        port = free_port()
        if port <= 55533 and all(_free(p) and _free(p + 10000) for p in range(port, port + 3)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def started_broker(workdir: Path) -> int | None:
    """The process id of the broker ``start_services`` started (None: it used BREAKOUT_KAFKA)."""
    pid_file = workdir / "kafka" / "broker.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


async def bench(args: argparse.Namespace, kafka: str, redis_url: str, broker_pid: int | None) -> None:
    single_topic, batched_topic, naive_topic = (
        f"bench-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("single", "batched", "naive")
    )
    profile = WIDE_PROFILE if args.wide else PROFILE
    await prepublish(kafka, single_topic, args.single, 1, profile)
    await prepublish(kafka, batched_topic, args.batched, 500, profile)
    await prepublish(kafka, naive_topic, args.naive, 1, profile)
    naive: list[float] = []
    runs: dict[str, list[PipelineRun]] = {"single": [], "batched": []}
    for run in range(args.runs):
        naive.append(time_naive(kafka, naive_topic, args.naive))
        for kind, topic, messages in (
            ("single", single_topic, args.single),
            ("batched", batched_topic, args.batched // 500),
        ):
            total = args.single if kind == "single" else args.batched
            runs[kind].append(await time_pipeline(kafka, redis_url, topic, total, messages, broker_pid))
        print(
            f"run {run + 1}: naive {naive[-1]:,.0f} CDR/s, "
            + ", ".join(f"{kind} {r[-1].rate:,.0f} CDR/s" for kind, r in runs.items()),
            flush=True,
        )
    baseline = statistics.median(naive)
    mix = "wide" if args.wide else "concentrated"
    print(f"\nmedians over {args.runs} runs ({mix} mix, one worker process, {os.cpu_count()} cores):")
    print(f"  baseline, Faust agent, one table increment per event: {baseline:>10,.0f} CDR/s")
    for kind, label in (
        ("single", "Breakout, single-CDR messages"),
        ("batched", "Breakout, 500-CDR batch messages"),
    ):
        median = statistics.median(r.rate for r in runs[kind])
        print(
            f"  {label:<52} {median:>10,.0f} CDR/s  ({median / baseline:.1f}x baseline), "
            f"worker peak RSS {statistics.median(r.peak_rss_mb for r in runs[kind]):,.0f} MB"
        )
    shards = "Redis, all shards (busiest shard)" if is_cluster(redis_url) else "Redis"
    print(f"  CPU per CDR (µs), medians: worker / Kafka broker / {shards}")
    for kind, kind_runs in runs.items():
        brokers = [r.broker_us for r in kind_runs if r.broker_us is not None]
        broker = f"{statistics.median(brokers):.1f}" if brokers else "n/a"
        busiest = statistics.median(r.redis_busiest_us for r in kind_runs)
        shown = f" ({busiest:.1f})" if is_cluster(redis_url) else ""
        print(
            f"    {kind}: {statistics.median(r.worker_us for r in kind_runs):.1f} / {broker} / "
            f"{statistics.median(r.redis_us for r in kind_runs):.1f}{shown}"
        )
    print("  Redis µs per CDR by command, last run (a script's own calls counted in it too):")
    for kind, kind_runs in runs.items():
        print(f"    {kind}: {kind_runs[-1].redis_commands}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single", type=int, default=100_000, help="CDRs sent one per message")
    parser.add_argument("--batched", type=int, default=500_000, help="CDRs sent 500 per message")
    parser.add_argument("--naive", type=int, default=20_000, help="CDRs for the baseline agent")
    parser.add_argument(
        "--wide", action="store_true", help="every customer calls every destination via every provider"
    )
    parser.add_argument("--cluster", action="store_true", help="Redis as a 3-primary Redis Cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="breakout-bench-") as workdir:
        kafka, redis_url, stops = start_services(Path(workdir), cluster=args.cluster)
        try:
            asyncio.run(bench(args, kafka, redis_url, started_broker(Path(workdir))))
        finally:
            for stop in stops:
                subprocess.run(stop, check=False)


if __name__ == "__main__":
    main()

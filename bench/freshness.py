"""Live freshness: how long after a CDR is sent it shows in ``GET /v1/breakout``, one worker.

    .venv/bin/python bench/freshness.py [--duration 60] [--shapes single,batched] [--rates 1000,25%,...]
        [--backlog 200000] [--worker-env KEY=VALUE ...]

Starts Kafka and Redis as bench/ingest.py does (or uses BREAKOUT_KAFKA / BREAKOUT_REDIS).
Per message shape, ``single`` (one CDR per Kafka message) and ``batched`` (arrays of 100):

1. the baseline, measured in the same run: a warm worker drains a backlog published while
   it was stopped (``drain``): CDR/s from its resume until everything is committed and
   mirrored, and its CPU (utime+stime from /proc) over that window per CDR; before the
   backlog, the same worker's CPU a second with no traffic (its clock: timers, fetches,
   flushes of nothing), which each live CDR's figure includes a share of;
2. live traffic at 1,000 CDR/s and at 25, 50 and 80 % of that backlog rate (``--rates``, where
   ``N%`` is a share of that rate):
   a fresh topic, worker and ``breakout api`` (the API reads one app id, so one per run),
   warmed up until a first probe per probe customer is visible, then ``--duration`` seconds
   of an open-loop stream from a separate generator process (so its CPU does not delay the
   probes timed here), event time = send time, sent every 10 ms tick whatever was acked;
3. the baseline's rate again (not the idle worker's CPU), once the shape's live windows are
   over: this shared machine's speed drifts (backlogs of 14,000 to 25,000 CDR/s within two
   hours), so a rate asked as 80 % of the first backlog may be 95 % of what the machine
   could do by the end. Each run's rate is printed as a share of both.

Probes: 10 CDRs a second from this process, round-robin over one probe customer per internal
partition, each sent as its own message (a bare CDR in ``single``, a 1-element array in
``batched``). ``/v1/breakout`` grouped by customer is polled every 50 ms; probe n of a
customer is visible when that customer's attempts reach n, its latency is the arrival of the
first such answer minus its send time. 503s (mirror incomplete) count as not visible.

Reported per run: rate asked / achieved (and whether the generator kept it: a rate it could
not produce is not the worker's), probes seen, send→visible p50/p90/p99/max, the worker's CPU
per CDR over the window against the backlog's (and how much of it is the idle worker's share
at that rate), ingest lag (max, first half vs last 10 s:
growing lag is a worker falling behind) and the API's own p50 response time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    PARTITIONS,
    PROFILE,
    committed_total,
    cpu_seconds,
    create_topic,
    free_port,
    machine_seconds,
    process_tree,
    start_services,
)
from breakout.auth import ADMIN, key_entry, new_key  # noqa: E402
from breakout.redis_layout import Layout, decode_watermarks  # noqa: E402
from breakout.synthetic import cdr_stream  # noqa: E402

PER_MESSAGE = {"single": 1, "batched": 100}
PROBES_PER_SECOND = 10
POLL_SECONDS = 0.05
TICK_SECONDS = 0.01
TEMPLATES = 20_000  # distinct CDRs the generator cycles through (ids and times are set at send)
DRAIN_SECONDS = 30.0  # polling for probes left after the window
# The warm worker's CPU with no traffic, measured over this long before the backlog, once
# what the warm-up message started (its flush, its mirroring) is over.
IDLE_SETTLE_SECONDS = 3.0
IDLE_SECONDS = 20.0


async def committed(admin: AIOKafkaAdminClient, group: str) -> int:
    """bench/ingest.py's ``committed_total``; 0 while a fresh broker has no group coordinator yet."""
    try:
        return await committed_total(admin, group)
    except KafkaError:
        return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``breakout <command>`` with its output kept in ``log``, read when it fails."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", command],
            env=dict(os.environ, **env),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


def start_worker(
    kafka: str, redis_url: str, topic: str, app_id: str, workdir: Path, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    """bench/ingest.py's ``start_worker`` plus ``--worker-env`` and a log kept for failures."""
    (workdir / app_id).mkdir()
    env = dict(
        BREAKOUT_KAFKA=kafka,
        BREAKOUT_REDIS=redis_url,
        BREAKOUT_TOPIC=topic,
        BREAKOUT_APP_ID=app_id,
        BREAKOUT_DATA_DIR=str(workdir / app_id),
        BREAKOUT_LOG_LEVEL="warning",
    )
    return spawn("worker", env | extra, workdir / f"{app_id}.log")


async def start_api(
    redis_url: str, app_id: str, key: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``breakout api`` on the worker's app id with one admin key (as bench/api.py's ``Api``)."""
    port = free_port()
    env = dict(
        BREAKOUT_REDIS=redis_url,
        BREAKOUT_APP_ID=app_id,
        BREAKOUT_API_PORT=str(port),
        BREAKOUT_API_KEYS=key_entry(key, ADMIN),
        BREAKOUT_LOG_LEVEL="warning",
    )
    process = spawn("api", env, log_path)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(150):
            try:
                await http.get(f"{url}/healthz", timeout=1)
                return process, url
            except httpx.HTTPError:
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.2)
    await stop(process)
    raise RuntimeError(f"the API did not start, see {log_path}")


async def stop(process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None) -> None:
    """Terminate a process started here, if it still runs, and reap it."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    if isinstance(process, subprocess.Popen):
        await asyncio.to_thread(process.wait, 30)
    else:
        await asyncio.wait_for(process.wait(), 30)


Message = tuple[int, bytes, bytes]  # partition, key, value


def producer_for(kafka: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=kafka, max_batch_size=1 << 20, max_request_size=16 << 20)


async def send_all(producer: AIOKafkaProducer, topic: str, messages: list[Message]) -> list[Any]:
    """Messages packed into one record batch per partition (and more when full), not one
    ``send`` each: Python's producer then costs a few µs a message. Returns the ack futures."""
    acks: list[Any] = []
    batches: dict[int, Any] = {}
    for partition, key, value in messages:
        batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
        if batch.append(key=key, value=value, timestamp=None) is None:
            acks.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for partition, batch in batches.items():
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


@dataclass(frozen=True)
class Backlog:
    """The baseline: a warm worker draining a backlog, and the same worker idle before it."""

    rate: float  # CDR/s
    cpu_us: float  # worker CPU per CDR drained
    idle_ms: float  # worker CPU per second with no traffic: the part of a live CDR's cost that is the clock's

    def idle_share_us(self, rate: float) -> float:
        """µs of each CDR's CPU at ``rate`` CDR/s that the worker spends idle anyway."""
        return self.idle_ms * 1000 / rate


async def drain(
    kafka: str,
    redis_url: str,
    shape: str,
    total: int,
    workdir: Path,
    env: dict[str, str],
    *,
    idle_seconds: float = IDLE_SECONDS,
) -> Backlog:
    """CDR/s and worker CPU µs per CDR draining a backlog of ``total`` CDRs, and the worker's
    CPU a second while idle before it (0 with ``idle_seconds`` 0: not measured).

    A fresh worker is warmed up with one message (so start-up is not counted), left idle
    for ``idle_seconds`` (its timers, fetches and flushes of nothing), stopped (SIGSTOP,
    all its processes) while the backlog is published, a few seconds at most (printed),
    within its consumers' session timeouts (10 s), then resumed: the clock and the CPU
    count from the resume until the ingest has committed everything and the Redis
    mirror's watermarks cover it. Timing from a cold worker's first commit
    (bench/ingest.py) would miss the first poll, up to 20,000 messages, and its CPU."""
    per_message = PER_MESSAGE[shape]
    app_id, topic = f"drain-{uuid.uuid4().hex[:8]}", f"backlog-{shape}-{uuid.uuid4().hex[:6]}"
    await create_topic(kafka, topic)
    cdrs = cdr_stream(seed=1, start_time=time.time() - total / 5000 - 60, rate=5000, profile=PROFILE)
    backlog = []
    for _ in range(total // per_message + 1):  # the first one warms the worker up
        chunk = [next(cdrs) for _ in range(per_message)]
        key = chunk[0]["customer_id"].encode()
        value = orjson.dumps(chunk[0] if per_message == 1 else chunk)
        backlog.append((zlib.crc32(key) % PARTITIONS, key, value))
    worker = start_worker(kafka, redis_url, topic, app_id, workdir, env)
    producer, admin = producer_for(kafka), AIOKafkaAdminClient(bootstrap_servers=kafka)
    consumer, client = AIOKafkaConsumer(bootstrap_servers=kafka), aioredis.from_url(redis_url)

    async def mirrored(messages: int) -> None:
        while await committed(admin, f"{app_id}-ingest") < messages:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited, see {workdir / app_id}.log")
            await asyncio.sleep(0.02)
        tps = [TopicPartition(f"{app_id}-normalized", p) for p in range(PARTITIONS)]
        ends = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        while True:
            watermarks = decode_watermarks(await client.hgetall(Layout(app_id).watermarks))
            marks = {p: mark.offset for p, mark in watermarks.items()}
            if all(end == 0 or marks.get(p, -1) >= end - 1 for p, end in ends.items()):
                return
            await asyncio.sleep(0.02)

    try:
        for started in (producer, admin, consumer):
            await started.start()
        warm_up, backlog = backlog[:1], backlog[1:]
        await asyncio.gather(*await send_all(producer, topic, warm_up))
        await asyncio.wait_for(mirrored(1), 180)
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        idle_cpu = cpu_seconds(worker.pid)
        await asyncio.sleep(idle_seconds)
        idle_ms = (cpu_seconds(worker.pid) - idle_cpu) / idle_seconds * 1000 if idle_seconds else 0.0
        # Every process of the worker: its ingest process, left running, would take in the
        # backlog while it is published, and the drain would time only the aggregating.
        stopped = process_tree(worker.pid)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        publishing = time.perf_counter()
        try:
            await asyncio.gather(*await send_all(producer, topic, backlog))
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        print(f"{shape} backlog published in {time.perf_counter() - publishing:.1f} s, the worker stopped")
        cpu, began = cpu_seconds(worker.pid), time.perf_counter()
        await mirrored(len(backlog) + 1)
        elapsed, cpu = time.perf_counter() - began, cpu_seconds(worker.pid) - cpu
        drained = len(backlog) * per_message
        return Backlog(drained / elapsed, cpu / drained * 1e6, idle_ms)
    finally:
        await stop(worker)
        await producer.stop()
        await consumer.stop()
        await admin.close()
        await client.aclose()


# --- the load generator, run as ``freshness.py --generator SPEC`` in its own process ---


async def generate(spec: dict[str, Any]) -> None:
    """Open loop: every tick, send every CDR due by now; acks never decide what is sent.

    CDRs are pre-encoded without id and start time; at send each gets a unique id and the
    tick's wall-clock time, by one bytes format. Prints READY, waits for a line on stdin,
    runs ``duration`` seconds and prints a JSON result."""
    per_message, rate, duration = spec["per_message"], spec["rate"], spec["duration"]
    templates = []
    cdrs = cdr_stream(seed=spec["seed"], start_time=0, rate=rate, profile=PROFILE)
    for _ in range(TEMPLATES):
        cdr = next(cdrs)
        rest = orjson.dumps({k: v for k, v in cdr.items() if k not in ("id", "start_time")})
        customer = cdr["customer_id"].encode()
        templates.append((zlib.crc32(customer) % PARTITIONS, customer, rest[1:]))
    tag = spec["tag"].encode()
    producer = producer_for(spec["kafka"])
    await producer.start()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    began = time.time()
    sent = messages = 0
    worst_tick, late_ticks, ticks = 0.0, 0, 0
    acks: list[Any] = []
    while True:
        tick = time.time()
        due = int(min(tick - began, duration) * rate) // per_message * per_message
        ts, batch = b"%.3f" % tick, []
        while sent < due:
            partition, key, _ = templates[sent % TEMPLATES]
            parts = []
            for _ in range(per_message):
                rest = templates[sent % TEMPLATES][2]
                parts.append(b'{"id":"%b-%d","start_time":%b,%b' % (tag, sent, ts, rest))
                sent += 1
            batch.append((partition, key, parts[0] if per_message == 1 else b"[" + b",".join(parts) + b"]"))
        messages += len(batch)
        acks = [ack for ack in acks if not ack.done()] + await send_all(producer, spec["topic"], batch)
        spent = time.time() - tick
        ticks += 1
        worst_tick = max(worst_tick, spent)
        late_ticks += spent > TICK_SECONDS
        if tick - began >= duration:
            break
        await asyncio.sleep(max(0.0, tick + TICK_SECONDS - time.time()))
    ended = time.time()
    await asyncio.gather(*acks)
    await producer.stop()
    result = {"sent": sent, "messages": messages, "began": began, "ended": ended, "worst_tick": worst_tick}
    print(json.dumps(result | {"late_ticks": late_ticks, "ticks": ticks}), flush=True)


# --- one live run ---


@dataclass
class Probes:
    """Send times per probe customer (index = attempts it needs) and each timed probe once seen."""

    customers: list[str]  # one per internal partition, in partition order
    sent: dict[str, list[float]] = field(default_factory=dict)
    timed: set[tuple[str, int]] = field(default_factory=set)  # probes whose latency counts
    seen: dict[str, int] = field(default_factory=dict)
    # Each timed probe once seen: (sent at, latency, its partition).
    timeline: list[tuple[float, float, int]] = field(default_factory=list)

    def observe(self, attempts: dict[str, int], at: float) -> None:
        for customer in self.customers:
            now = min(attempts.get(customer, 0), len(self.sent.get(customer, [])))
            for n in range(self.seen.get(customer, 0), now):
                if (customer, n) in self.timed:
                    sent_at = self.sent[customer][n]
                    self.timeline.append((sent_at, at - sent_at, self.customers.index(customer)))
            self.seen[customer] = max(now, self.seen.get(customer, 0))

    def unseen(self) -> int:
        return sum(len(times) - self.seen.get(c, 0) for c, times in self.sent.items())


# The slowest probes sent less than this apart are one stretch of the tail.
TAIL_GAP_SECONDS = 2.0


def tail_stretches(timeline: list[tuple[float, float, int]], began: float, share: float = 0.01) -> str:
    """When the slowest ``share`` of the probes were sent, as stretches of the window, and
    which partitions each held: one stretch across every partition is the worker (or the
    machine) stalling, stretches of one partition at a time point at that partition's own
    work (its table flush), a tail spread over the window at a worker that is merely busy."""
    if not timeline:
        return "none seen"
    slow_count = max(1, round(len(timeline) * share))
    slowest = sorted(sorted(timeline, key=lambda probe: -probe[1])[:slow_count])
    stretches: list[list[tuple[float, float, int]]] = [[slowest[0]]]
    for probe in slowest[1:]:
        if probe[0] - stretches[-1][-1][0] > TAIL_GAP_SECONDS:
            stretches.append([])
        stretches[-1].append(probe)
    return f"{slow_count} sent in {len(stretches)} stretch{'es' if len(stretches) > 1 else ''}: " + "; ".join(
        f"{stretch[0][0] - began:.0f}-{stretch[-1][0] - began:.0f} s "
        f"(partitions {','.join(str(p) for p in sorted({probe[2] for probe in stretch}))}, "
        f"up to {max(probe[1] for probe in stretch):.2f} s)"
        for stretch in stretches
    )


def probe_customers() -> list[str]:
    """``probe-N`` names, one per internal partition (CRC-32 of the id, as streams/ingest.py)."""
    chosen: dict[int, str] = {}
    for n in count():
        chosen.setdefault(zlib.crc32(f"probe-{n}".encode()) % PARTITIONS, f"probe-{n}")
        if len(chosen) == PARTITIONS:
            return [chosen[p] for p in range(PARTITIONS)]
    raise AssertionError


@dataclass
class Run:
    """One live run's figures."""

    shape: str
    rate: float
    generator: dict[str, Any]  # what the generator process reported
    achieved: float
    kept: bool  # whether the generator sent the rate asked, on time
    probes: int
    unseen: int
    latencies: list[float]
    tail: str  # when the slowest probes were sent (``tail_stretches``)
    cpu_us: float  # the worker's CPU per CDR sent in the window
    stolen: float  # cores the hypervisor took from this machine over the window, on average
    cores: dict[str, float]  # cores each part used over the window, on average (``Cores``)
    lag_max: float  # ingest lag, in seconds of traffic
    lag_first: float
    lag_last: float
    api_p50_ms: float
    status: dict[str, int]
    as_of_age: tuple[float, float]  # at the last answer, and the most during the run
    worker_log: str  # its last lines, shown when probes went unseen

    def spread(self, fmt: str, sep: str) -> str:
        """Latency p50, p90, p99 and max."""
        values = self.latencies or [float("nan")]
        figures = [percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values)]
        return sep.join(fmt.format(figure) for figure in figures)

    def report(self, backlog: Backlog) -> str:
        gen = self.generator
        kept = (
            "kept the rate" if self.kept else "DID NOT KEEP THE RATE: the figures below are not the worker's"
        )
        return (
            f"{self.shape} at {self.rate:,.0f} CDR/s:\n"
            f"  generator: {gen['sent']:,} CDRs in {gen['messages']:,} messages, {self.achieved:,.0f} CDR/s, "
            f"{kept} (worst tick {gen['worst_tick'] * 1000:.0f} ms, {gen['late_ticks']}/{gen['ticks']} "
            f"ticks over {TICK_SECONDS * 1000:.0f} ms)\n"
            f"  probes seen {self.probes - self.unseen}/{self.probes} (unseen: {self.unseen}); "
            f"send -> visible p50/p90/p99/max: {self.spread('{:.2f}', ' / ')} s\n"
            f"  slowest 1 % of the probes: {self.tail}\n"
            f"  worker CPU {self.cpu_us:.0f} us/CDR live vs {backlog.cpu_us:.0f} us/CDR draining a backlog "
            f"({self.cpu_us / backlog.cpu_us:.1f}x), {backlog.idle_share_us(self.achieved):.0f} us/CDR of it "
            f"the idle worker's own; backlog rate {backlog.rate:,.0f} CDR/s; "
            f"{self.stolen:.2f} cores stolen by the hypervisor\n"
            f"  cores used: {', '.join(f'{part} {used:.2f}' for part, used in self.cores.items())}\n"
            f"  ingest lag (s of traffic): max {self.lag_max:.1f}, mean first half {self.lag_first:.1f}, "
            f"mean last 10 s {self.lag_last:.1f}\n"
            f"  API: p50 {self.api_p50_ms:.1f} ms a poll, answers {self.status}; "
            f"as_of {self.as_of_age[0]:.1f} s old at the last answer, at most {self.as_of_age[1]:.1f} s"
            + (f"\n  worker log, last lines:\n{self.worker_log}" if self.unseen else "")
        )


class Cores:
    """Where the machine's cores go over a live window: the worker (with its ingest
    process), the generator, the API, this process (probes and polls), and the rest
    (Kafka, Redis, the system), against what the machine had. Live traffic shares the
    cores with its generator, which a backlog drained with the generator stopped does not:
    this is how much of the machine the worker had at each rate."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.began = time.time()
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        parts = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        parts["this bench"] = sum(os.times()[:2])
        parts["busy"], parts["stolen"] = machine_seconds()
        return parts

    def used(self) -> dict[str, float]:
        after, elapsed = self._sample(), time.time() - self.began
        used = {name: (after[name] - self.before[name]) / elapsed for name in after}
        busy, stolen = used.pop("busy"), used.pop("stolen")
        used["Kafka, Redis and the rest"] = max(0.0, busy - sum(used.values()))
        used["idle"] = max(0.0, (os.cpu_count() or 1) - busy - stolen)
        return used


def utc_day(t: float) -> str:
    """The UTC date of a wall-clock time, for ``from`` and ``to`` (the API's default tz)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


async def live(
    args: argparse.Namespace, kafka: str, redis_url: str, workdir: Path, shape: str, rate: float
) -> Run:
    """One steady-rate run on a fresh topic, worker and API."""
    per_message = PER_MESSAGE[shape]
    app_id, topic = f"live-{uuid.uuid4().hex[:8]}", f"live-{shape}-{uuid.uuid4().hex[:6]}"
    await create_topic(kafka, topic)
    key = new_key()
    probes = Probes(probe_customers())
    template = next(c for c in cdr_stream(99, time.time(), 1, PROFILE) if c["status"] == "answered")
    params = httpx.QueryParams(  # UTC days from now to well past the run: covers a midnight in it
        [
            ("from", utc_day(time.time())),
            ("to", utc_day(time.time() + args.duration + 600)),
            ("group_by", "customer"),
            *(("customer", c) for c in probes.customers),
        ]
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=0)  # probes: no waiting
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    ends = AIOKafkaConsumer(bootstrap_servers=kafka)
    responses: list[float] = []
    status: dict[str, int] = {}
    as_of_age: list[float] = []
    lag: list[tuple[float, int]] = []
    sequence = count()
    spec = dict(kafka=kafka, topic=topic, rate=rate, per_message=per_message, duration=args.duration)
    generator = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--generator", json.dumps(spec | {"seed": 7, "tag": app_id}),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    worker = start_worker(kafka, redis_url, topic, app_id, workdir, args.worker_env)
    api = None
    try:
        api, url = await start_api(redis_url, app_id, key, workdir / f"{app_id}-api.log")
        await producer.start()
        await admin.start()
        await ends.start()
        http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        async def send_probe(customer: str, timed: bool) -> None:
            cdr = template | {"id": f"{app_id}-p{next(sequence)}", "customer_id": customer}
            sent_at = time.time()
            cdr["start_time"] = round(sent_at, 3)
            value = orjson.dumps(cdr if per_message == 1 else [cdr])
            times = probes.sent.setdefault(customer, [])
            if timed:
                probes.timed.add((customer, len(times)))
            times.append(sent_at)
            await producer.send(topic, value, key=customer.encode())

        async def poll_once() -> None:
            began = time.time()
            try:
                response = await http.get("/v1/breakout", params=params)
            except httpx.HTTPError as exc:
                status[type(exc).__name__] = status.get(type(exc).__name__, 0) + 1
                return
            at = time.time()
            responses.append(at - began)
            status[str(response.status_code)] = status.get(str(response.status_code), 0) + 1
            if response.status_code == 200:
                body = response.json()
                attempts: dict[str, int] = {}
                for row in body["rows"]:
                    attempts[row["customer"]] = attempts.get(row["customer"], 0) + row["attempts"]
                probes.observe(attempts, at)
                if body["as_of_ms"] is not None:
                    as_of_age.append(at - body["as_of_ms"] / 1000)
            elif response.status_code != 503:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        # Warm-up: one probe per customer, visible through the API = the worker is consuming.
        for customer in probes.customers:
            await send_probe(customer, timed=False)
        deadline = time.time() + 180
        while probes.unseen():
            if time.time() > deadline or worker.poll() is not None:
                raise RuntimeError(f"warm-up probes not visible, see {workdir / app_id}.log")
            await poll_once()
            await asyncio.sleep(POLL_SECONDS)
        warm_503 = status.pop("503", 0)
        responses.clear()
        as_of_age.clear()
        assert generator.stdin is not None and generator.stdout is not None
        if (await generator.stdout.readline()).strip() != b"READY":
            raise RuntimeError("the generator did not start")
        window_over, deadline = asyncio.Event(), float("inf")
        cpu_before, began = cpu_seconds(worker.pid), time.time()
        stolen_before = machine_seconds()[1]
        cores = Cores(worker=worker.pid, generator=generator.pid, api=api.pid)
        generator.stdin.write(b"GO\n")
        await generator.stdin.drain()

        async def probe_loop() -> None:
            for n in range(int(args.duration * PROBES_PER_SECOND)):
                await asyncio.sleep(max(0.0, began + n / PROBES_PER_SECOND - time.time()))
                await send_probe(probes.customers[n % len(probes.customers)], timed=True)

        async def lag_loop() -> None:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            while True:
                end = sum((await ends.end_offsets(tps)).values())
                lag.append((time.time() - began, end - await committed(admin, f"{app_id}-ingest")))
                await asyncio.sleep(1.0)

        async def poll_loop() -> None:  # until the window is over and every probe seen, or time is up
            while not (window_over.is_set() and (not probes.unseen() or time.time() > deadline)):
                await poll_once()
                await asyncio.sleep(POLL_SECONDS)

        probing, sampling, polling = (
            asyncio.create_task(loop()) for loop in (probe_loop, lag_loop, poll_loop)
        )
        line = await generator.stdout.readline()
        cpu = cpu_seconds(worker.pid) - cpu_before
        stolen = (machine_seconds()[1] - stolen_before) / (time.time() - began)
        used = cores.used()
        sampling.cancel()
        if not line:
            raise RuntimeError("the generator exited without a result")
        result = json.loads(line)
        await probing
        deadline = time.time() + DRAIN_SECONDS
        window_over.set()
        await polling
        await http.aclose()
    finally:
        for process in (generator, worker, api):
            await stop(process)
        await producer.stop()
        await admin.close()
        await ends.stop()
    lag_s = [(t, n / (rate / per_message + PROBES_PER_SECOND)) for t, n in lag]  # seconds of traffic
    window = result["ended"] - result["began"]
    return Run(
        shape=shape,
        rate=rate,
        generator=result,
        achieved=result["sent"] / window,
        kept=result["sent"] >= 0.99 * rate * args.duration and window < args.duration + 0.5,
        probes=len(probes.timed),
        unseen=probes.unseen(),
        latencies=[latency for _, latency, _ in probes.timeline],
        tail=tail_stretches(probes.timeline, began),
        cpu_us=cpu / (result["sent"] + len(probes.timed)) * 1e6,
        stolen=stolen,
        cores=used,
        lag_max=max((n for _, n in lag_s), default=0.0),
        lag_first=statistics.mean([n for t, n in lag_s if t < args.duration / 2] or [0]),
        lag_last=statistics.mean([n for t, n in lag_s if t >= args.duration - 10] or [0]),
        api_p50_ms=statistics.median(responses) * 1000 if responses else float("nan"),
        status=status | {"503 in warm-up": warm_503},
        as_of_age=(as_of_age[-1], max(as_of_age)) if as_of_age else (float("nan"),) * 2,
        worker_log="\n".join(
            "    " + line
            for line in (workdir / f"{app_id}.log").read_text(errors="replace").splitlines()[-15:]
        ),
    )


DEFAULT_RATES = "1000,25%,50%,80%"


def live_rates(spec: str, backlog_rate: float) -> list[float]:
    """The CDR/s of each live run: ``N`` as given, ``N%`` of the backlog rate of this run."""
    rates = [  # a rate given twice is run twice: its figures vary from window to window
        backlog_rate * float(entry[:-1]) / 100 if entry.endswith("%") else float(entry)
        for entry in (part.strip() for part in spec.split(","))
    ]
    if not all(0 < rate < float("inf") for rate in rates):
        raise ValueError(f"rates must be positive and finite: {spec!r}")
    return sorted(rates)


async def bench(args: argparse.Namespace, kafka: str, redis_url: str, workdir: Path) -> None:
    backlog: dict[str, Backlog] = {}
    after: dict[str, Backlog] = {}  # drained again once the shape's live windows are over
    runs: list[Run] = []
    for shape in args.shapes:
        backlog[shape] = await drain(kafka, redis_url, shape, args.backlog, workdir, args.worker_env)
        print(
            f"{shape} backlog: {backlog[shape].rate:,.0f} CDR/s, {backlog[shape].cpu_us:.0f} us CPU/CDR; "
            f"idle before it: {backlog[shape].idle_ms:.1f} ms CPU/s",
            flush=True,
        )
        for rate in live_rates(args.rates, backlog[shape].rate):
            runs.append(await live(args, kafka, redis_url, workdir, shape, rate))
            print(runs[-1].report(backlog[shape]), flush=True)
        # Only its rate is used: the idle worker is not measured again.
        after[shape] = await drain(
            kafka, redis_url, shape, args.backlog, workdir, args.worker_env, idle_seconds=0.0
        )
        print(
            f"{shape} backlog again, after its live windows: {after[shape].rate:,.0f} CDR/s "
            f"({after[shape].rate / backlog[shape].rate - 1:+.0%} against the first), "
            f"{after[shape].cpu_us:.0f} us CPU/CDR",
            flush=True,
        )
    print(f"\none worker process, {os.cpu_count()} cores, {args.duration:.0f} s per rate; latencies in s")
    print(
        f"{'shape':<8}{'asked':>8}{'sent/s':>8}{'kept':>5}{'probes':>9}{'p50':>7}{'p90':>7}{'p99':>7}"
        f"{'max':>7}{'us/CDR':>8}{'backlog':>9}{'ratio':>7}{'lag max':>8}{'lag end':>8}{'stolen':>8}"
        f"{'of backlog':>12}"
    )
    for run in runs:
        cpu = backlog[run.shape].cpu_us
        share = f"{run.rate / backlog[run.shape].rate:.0%}/{run.rate / after[run.shape].rate:.0%}"
        print(
            f"{run.shape:<8}{run.rate:>8,.0f}{run.achieved:>8,.0f}{'yes' if run.kept else 'NO':>5}"
            f"{run.probes - run.unseen:>5}/{run.probes:<3}{run.spread('{:>7.2f}', '')}"
            f"{run.cpu_us:>8.0f}{cpu:>9.0f}{run.cpu_us / cpu:>6.1f}x{run.lag_max:>7.1f}s{run.lag_last:>7.1f}s"
            f"{run.stolen:>8.2f}{share:>12}"
        )
    for shape, base in backlog.items():
        print(
            f"backlog baseline, {shape}: {base.rate:,.0f} CDR/s, {base.cpu_us:.0f} us CPU per CDR; "
            f"the worker idle before it: {base.idle_ms:.1f} ms CPU a second; "
            f"again after the live windows: {after[shape].rate:,.0f} CDR/s"
        )
    print("of backlog: each run's rate as a share of its shape's backlog rate before / after the windows")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady traffic per rate")
    parser.add_argument("--shapes", default="single,batched", help="comma-separated: single, batched")
    parser.add_argument(
        "--rates",
        default=DEFAULT_RATES,
        help="comma-separated CDR/s for every shape, N%% of the backlog rate (default %(default)s)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=200_000,
        help="CDRs drained for the baseline: enough for several seconds of draining, so that its "
        "first poll and its last flush weigh little in the CPU per CDR",
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE", help="for the workers"
    )
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generator:
        asyncio.run(generate(json.loads(args.generator)))
        return
    args.shapes = [shape.strip() for shape in args.shapes.split(",")]
    if unknown := set(args.shapes) - PER_MESSAGE.keys():
        parser.error(f"--shapes: unknown {', '.join(sorted(unknown))}")
    try:
        live_rates(args.rates, 1.0)
    except ValueError as exc:
        parser.error(f"--rates: {exc}")
    args.worker_env = dict(entry.split("=", 1) for entry in args.worker_env)
    with tempfile.TemporaryDirectory(prefix="breakout-freshness-") as workdir:
        kafka, redis_url, stops = start_services(Path(workdir))
        try:
            asyncio.run(bench(args, kafka, redis_url, Path(workdir)))
        finally:
            for stop_command in stops:
                subprocess.run(stop_command, check=False)


if __name__ == "__main__":
    main()

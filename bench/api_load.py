"""Many portal users at once: ``GET /v1/breakout`` under concurrent load while a worker ingests.

    .venv/bin/python bench/api_load.py [--customers 1000] [--destinations 300] [--days 31]
        [--keys 200] [--duration 60] [--clients 50] [--rate 100] [--ingest 2000] [--workers N]

Starts Kafka and Redis as bench/ingest.py does (or uses BREAKOUT_KAFKA / BREAKOUT_REDIS), writes
``--days`` whole UTC days (the last one today) through the worker's own mirror as bench/api.py
does (1,000 customers x 300 destinations: about 930,000 rows), then starts one ``breakout
worker`` on the same app id, fed by ``breakout demo --rate 2000`` (its 25 customers,
``cust-000`` to ``cust-024``, are among the dataset's, so their own hashes move too), and
``breakout api`` (``--workers N`` passed on when given). While the worker ingests:

a. one request at a time for ``--duration`` seconds: the in-run baseline;
b. closed loop: ``--clients`` concurrent clients, each sending its next request when its
   last one answered, for ``--duration`` seconds;
c. open loop: ``--rate`` requests a second sent on schedule whether or not earlier ones
   answered, for ``--duration`` seconds; a latency runs from the scheduled send time, so
   a server falling behind shows as growing latencies, not as a slower sender.

Every phase draws from the same mix, a portal's traffic at the start of a month: mostly
customer keys (``--keys`` of them) reading their own month and their own day, some CSV, and
admin reports (by destination, one destination, the top 50 customers, a destination's CSV).
A customer key's answer that names another customer counts as an error, like any status
other than 200 or a transport failure. Before the phases every distinct request is sent once
(the caches a portal's Refreshes would have filled).

Printed per phase: requests, requests/s, p50/p90/p99/max (ms), errors, the CDRs the worker
accepted a second over the phase, and the ratios against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import orjson
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import DAY, fill  # noqa: E402
from bench.freshness import percentile, spawn, stop  # noqa: E402
from bench.ingest import (  # noqa: E402
    cpu_seconds,
    create_topic,
    free_port,
    machine_seconds,
    start_services,
    started_broker,
)
from breakout.auth import ADMIN, Role, key_entry, new_key  # noqa: E402
from breakout.redis_layout import Layout  # noqa: E402

DEMO_CUSTOMERS = 25  # `breakout demo` sends cust-000 … cust-024
HTTP_TIMEOUT = 60.0
SLOW_MS = 500  # a request this slow is listed with when it was sent
WARM_SECONDS = 0.5  # a round of an admin report answered within this: every process has it cached


def customer_name(number: int) -> str:
    """The demo generator's spelling, so its customers are among the dataset's."""
    return f"cust-{number:03d}"


@dataclass(frozen=True)
class Call:
    """One request of the mix: its kind (for the per-kind figures), key, parameters and owner."""

    kind: str
    key: str
    params: tuple[tuple[str, str], ...]
    customer: str | None  # a customer key's own account: its answer must name no other


def mix(keys: dict[str, str], admin: str, month: dict[str, str], today: str) -> list[tuple[int, list[Call]]]:
    """(weight, calls of that kind) of a portal's start-of-month traffic: 75 % customer keys."""
    day = {"from": today, "to": today}
    one = "Destination 007"
    top = {"group_by": "customer", "sort": "-attempts", "limit": "50"}

    def own(kind: str, params: dict[str, str]) -> list[Call]:
        return [Call(kind, key, tuple(params.items()), name) for name, key in keys.items()]

    def admin_call(kind: str, params: dict[str, str]) -> list[Call]:
        return [Call(kind, admin, tuple(params.items()), None)]

    return [
        (35, own("customer month", month)),
        (30, own("customer day", day)),
        (10, own("customer month csv", month | {"format": "csv"})),
        (10, admin_call("admin by destination", month | {"group_by": "destination"})),
        (5, admin_call("admin one destination", month | {"destination": one})),
        (5, admin_call("admin top 50 customers", month | top)),
        (5, admin_call("admin destination csv", month | {"destination": one, "format": "csv"})),
    ]


class Mix:
    """Draws calls by weight; deterministic for a seed."""

    def __init__(self, kinds: list[tuple[int, list[Call]]], seed: int) -> None:
        self.kinds = kinds
        self.rng = random.Random(seed)

    def next(self) -> Call:
        (calls,) = self.rng.choices([calls for _, calls in self.kinds], weights=[w for w, _ in self.kinds])
        return self.rng.choice(calls)

    def distinct(self) -> list[Call]:
        return [call for _, calls in self.kinds for call in calls]


@dataclass
class Outcome:
    """What one phase saw."""

    latencies: list[float] = field(default_factory=list)  # ms, answered requests
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    accepted_per_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # cores used over the phase, by process
    began: float = field(default_factory=time.perf_counter)
    slow: list[tuple[float, float]] = field(default_factory=list)  # (sent, s into the phase; ms)

    def record(self, call: Call, sent: float, ms: float, error: str | None) -> None:
        if error is not None:
            self.errors[error] += 1
            return
        self.latencies.append(ms)
        self.by_kind.setdefault(call.kind, []).append(ms)
        if ms >= SLOW_MS:
            self.slow.append((sent - self.began, ms))

    def stalls(self) -> list[tuple[float, float, int, float]]:
        """The slow requests in runs sent less than a second apart: (first sent, last sent,
        how many, the slowest ms). One long run is one stall of the API (or of the machine);
        many short ones spread over the phase are slow requests."""
        runs: list[tuple[float, float, int, float]] = []
        for sent, ms in sorted(self.slow):
            if runs and sent - runs[-1][1] < 1.0:
                first, _, count, worst = runs[-1]
                runs[-1] = (first, sent, count + 1, max(worst, ms))
            else:
                runs.append((sent, sent, 1, ms))
        return runs

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


def foreign(call: Call, content_type: str, body: bytes) -> bool:
    """Whether a customer key's answer names a customer other than its own."""
    if call.customer is None:
        return False
    if "csv" in content_type:
        lines = list(csv.DictReader(io.StringIO(body.decode())))
        return any(line.get("customer") not in (None, call.customer) for line in lines)
    return any(row.get("customer", call.customer) != call.customer for row in orjson.loads(body)["rows"])


async def send(http: aiohttp.ClientSession, call: Call) -> str | None:
    """One request; the error it makes, or None."""
    try:
        async with http.get(
            "/v1/breakout", params=call.params, headers={"Authorization": f"Bearer {call.key}"}
        ) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    if response.status != 200:
        return f"HTTP {response.status} {body[:160].decode(errors='replace')}"
    if foreign(call, response.headers.get("content-type", ""), body):
        return "another customer's rows"
    return None


def session(url: str, connections: int, fresh: bool = False) -> aiohttp.ClientSession:
    """aiohttp rather than httpx: at 200 requests a second httpx's own CPU (about 4 ms a
    request here) would take a core of the two the API is measured on."""
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections, force_close=fresh),
        timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
    )


async def timed(http: aiohttp.ClientSession, call: Call, began: float, outcome: Outcome) -> None:
    error = await send(http, call)
    outcome.record(call, began, (time.perf_counter() - began) * 1000, error)


async def closed_loop(
    http: aiohttp.ClientSession, calls: Mix, clients: int, seconds: float, outcome: Outcome
) -> None:
    """``clients`` clients, each sending its next request as soon as its last one answered."""
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            await timed(http, calls.next(), time.perf_counter(), outcome)

    await asyncio.gather(*(client() for _ in range(clients)))


async def open_loop(
    http: aiohttp.ClientSession, calls: Mix, rate: float, seconds: float, outcome: Outcome
) -> None:
    """``rate`` requests a second on a fixed schedule; a latency counts from the scheduled time."""
    start = time.perf_counter()
    tasks = []
    for n in range(int(rate * seconds)):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(http, calls.next(), scheduled, outcome)))
    await asyncio.gather(*tasks)


async def accepted(client: aioredis.Redis, layout: Layout) -> int:
    """CDRs the worker's ingest step accepted so far (its counters hash in Redis)."""
    total = 0
    async for name in client.scan_iter(match=layout.counters_pattern):
        value = await client.hget(name, "accepted")
        total += int(value or 0)
    return total


def start_demo(services: dict[str, str], rate: float, batch: int) -> subprocess.Popen[bytes]:
    """``breakout demo`` into the worker's topic: live traffic, event time = now."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--rate", str(rate), "--batch", str(batch)],
        env=dict(os.environ, **services, BREAKOUT_LOG_LEVEL="warning"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Api:
    """``breakout api`` (``--workers`` passed on when given) with one admin and many customer keys."""

    def __init__(self, redis_url: str, app: str, entries: list[str], workers: int | None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            BREAKOUT_REDIS=redis_url,
            BREAKOUT_APP_ID=app,
            BREAKOUT_API_PORT=str(self.port),
            BREAKOUT_API_KEYS=",".join(entries),
            BREAKOUT_LOG_LEVEL="warning",
        )
        command = "api" if workers is None else f"api --workers {workers}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", *command.split()],
                env=dict(os.environ, **env),
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        self.log = log

    async def ready(self) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    await http.get(f"{self.url}/healthz", timeout=1)
                    return
                except httpx.HTTPError:
                    if self.process.poll() is not None:
                        break
                    await asyncio.sleep(0.2)
        raise RuntimeError(f"the API did not start, see {self.log}")


async def warm_up(url: str, distinct: list[Call], processes: int, outcome: Outcome) -> None:
    """Every distinct request once, in each API process: the caches a portal's Refreshes fill.

    A process is reached only through the connections it happens to accept, so with several
    each admin report is sent on fresh connections, several at once, until a whole round
    answers fast: a process left cold would pay a month's cold sums inside a measured phase
    (a customer's own month is cheap to read cold).
    """
    async with session(url, 8 * processes, fresh=True) as http:
        for n in range(0, len(distinct), 8):
            batch = distinct[n : n + 8]
            await asyncio.gather(*(timed(http, call, time.perf_counter(), outcome) for call in batch))
        if processes == 1:
            return
        for call in [call for call in distinct if call.customer is None]:
            for _ in range(20):
                began = time.perf_counter()
                await asyncio.gather(*(send(http, call) for _ in range(4 * processes)))
                if time.perf_counter() - began < WARM_SECONDS:
                    break


def cpu_now(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process (with its children: the API's workers), this one's
    own, the machine's busy seconds less all of those ("others": jobs sharing the machine)
    and its stolen seconds (see ``bench.ingest.machine_seconds``)."""
    ours = {name: cpu_seconds(pid) for name, pid in processes.items()} | {"bench": time.process_time()}
    busy, stolen = machine_seconds()
    return ours | {"others": busy - sum(ours.values()), "stolen": stolen}


async def phase(
    name: str,
    run: Callable[[Outcome], Awaitable[None]],
    processes: dict[str, int],
    redis: aioredis.Redis,
    layout: Layout,
) -> Outcome:
    cdrs, cpu = await accepted(redis, layout), cpu_now(processes)
    outcome = Outcome()
    began = outcome.began
    await run(outcome)
    outcome.seconds = time.perf_counter() - began
    outcome.cpu = {name: (used - cpu[name]) / outcome.seconds for name, used in cpu_now(processes).items()}
    # The counters are written with the worker's flushes: over a phase of seconds, close enough.
    outcome.accepted_per_s = (await accepted(redis, layout) - cdrs) / outcome.seconds
    print(f"  {name}: {outcome.requests:,} requests in {outcome.seconds:.0f} s", flush=True)
    return outcome


def report(results: dict[str, Outcome]) -> None:
    base = results["one at a time"]
    base_rps = base.requests / base.seconds
    base_p50 = percentile(base.latencies, 0.5) if base.latencies else float("nan")
    print(
        f"\n{'phase':<22}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}{'ingest CDR/s':>14}{'API CPU ms/req':>16}{'req/s vs base':>15}{'p99 vs base p50':>17}"
    )
    for name, outcome in results.items():
        lat = outcome.latencies or [float("nan")]
        rps = outcome.requests / outcome.seconds
        p50, p90, p99 = (percentile(lat, q) for q in (0.5, 0.9, 0.99))
        cpu_ms = 1000 * outcome.cpu["api"] * outcome.seconds / max(1, outcome.requests)
        print(
            f"{name:<22}{outcome.requests:>9,}{rps:>8.1f}{p50:>9.1f}{p90:>9.1f}{p99:>9.1f}{max(lat):>9.1f}"
            f"{sum(outcome.errors.values()):>8}{outcome.accepted_per_s:>14,.0f}{cpu_ms:>16.1f}"
            f"{rps / base_rps:>14.1f}x{p99 / base_p50:>16.1f}x"
        )
    print(
        "\ncores used (CPU seconds a second) by process; others: the rest of the machine's busy"
        " time (jobs sharing it); stolen: by the hypervisor (a shared VM's cores running others):"
    )
    for name, outcome in results.items():
        print(f"  {name:<22}" + "  ".join(f"{process} {used:.2f}" for process, used in outcome.cpu.items()))
    for name, outcome in results.items():
        if outcome.errors:
            print(f"errors in {name}: {dict(outcome.errors)}")
    print(
        f"\nrequests of {SLOW_MS} ms or more, in runs sent less than 1 s apart"
        " (s into the phase; the slowest 8):"
    )
    for name, outcome in results.items():
        runs = outcome.stalls()
        shown = ", ".join(
            f"{first:.1f}-{last:.1f} s: {count} (max {worst:.0f} ms)"
            for first, last, count, worst in sorted(runs, key=lambda run: -run[3])[:8]
        )
        print(f"  {name:<22}{len(outcome.slow)} in {len(runs)} runs" + (f"; {shown}" if runs else ""))
    print("\np50 / p99 ms by kind:")
    kinds = sorted({kind for outcome in results.values() for kind in outcome.by_kind})
    print(f"{'kind':<26}" + "".join(f"{name:>24}" for name in results))
    for kind in kinds:
        cells = []
        for outcome in results.values():
            of_kind = outcome.by_kind.get(kind)
            cell = f"{percentile(of_kind, 0.5):.1f} / {percentile(of_kind, 0.99):.1f}" if of_kind else "-"
            cells.append(cell)
        print(f"{kind:<26}" + "".join(f"{cell:>24}" for cell in cells))


async def run(args: argparse.Namespace, kafka: str, redis_url: str, workdir: Path) -> None:
    app = f"bench-load-{uuid.uuid4().hex[:8]}"
    topic = f"{app}-cdrs"
    began = time.perf_counter()
    first, _, written = await fill(
        redis_url,
        app,
        args.customers,
        args.destinations,
        args.days,
        through_today=True,
        customer_name=customer_name,
    )
    print(
        f"mirrored {written:,} rows ({args.customers} customers x {args.destinations} destinations, "
        f"{args.days} days) in {time.perf_counter() - began:.0f} s",
        flush=True,
    )
    today = time.strftime("%Y-%m-%d", time.gmtime(first + (args.days - 1) * DAY))
    month = {"from": time.strftime("%Y-%m-%d", time.gmtime(first)), "to": today}
    rng = random.Random(3)
    keyed = list(range(min(DEMO_CUSTOMERS, args.customers)))
    more = max(0, min(args.keys, args.customers) - len(keyed))
    keyed += rng.sample(range(len(keyed), args.customers), more)
    keys = {customer_name(c): new_key() for c in keyed}
    admin = new_key()
    entries = [key_entry(admin, ADMIN)] + [key_entry(key, Role(name)) for name, key in keys.items()]
    kinds = mix(keys, admin, month, today)

    await create_topic(kafka, topic)
    services = dict(BREAKOUT_KAFKA=kafka, BREAKOUT_REDIS=redis_url, BREAKOUT_TOPIC=topic, BREAKOUT_APP_ID=app)
    worker = spawn(
        "worker",
        services | dict(BREAKOUT_DATA_DIR=str(workdir / "worker"), BREAKOUT_LOG_LEVEL="warning"),
        workdir / "worker.log",
    )
    demo = None
    api = Api(redis_url, app, entries, args.workers, workdir / "api.log")
    redis = aioredis.from_url(redis_url)
    layout = Layout(app)
    try:
        await api.ready()
        demo = start_demo(services, args.ingest, args.batch)
        async with session(api.url, args.clients * 4) as http:
            # Until the worker's first CDRs are mirrored, then every distinct request once.
            for _ in range(300):
                if await accepted(redis, layout) > 0:
                    break
                await asyncio.sleep(0.2)
            warm = Outcome()
            started = time.perf_counter()
            distinct = Mix(kinds, 0).distinct()
            await warm_up(api.url, distinct, args.workers or 1, warm)
            print(
                f"warmed {len(distinct)} distinct requests in {time.perf_counter() - started:.0f} s"
                f" ({sum(warm.errors.values())} errors); phases of {args.duration:.0f} s, worker ingesting",
                flush=True,
            )
            calls = Mix(kinds, 1)
            results: dict[str, Outcome] = {}

            async def one_at_a_time(outcome: Outcome) -> None:
                await closed_loop(http, calls, 1, args.duration, outcome)

            async def concurrent(outcome: Outcome) -> None:
                await closed_loop(http, calls, args.clients, args.duration, outcome)

            async def scheduled(outcome: Outcome) -> None:
                await open_loop(http, calls, args.rate, args.duration, outcome)

            processes = {"api": api.process.pid, "worker": worker.pid, "demo": demo.pid}
            redis_pid = workdir / "redis" / "redis.pid"
            if redis_pid.exists():
                processes["redis"] = int(redis_pid.read_text())
            broker = started_broker(workdir)
            if broker is not None:
                processes["kafka"] = broker
            results["one at a time"] = await phase("one at a time", one_at_a_time, processes, redis, layout)
            results[f"closed, {args.clients} clients"] = await phase(
                f"closed loop, {args.clients} clients", concurrent, processes, redis, layout
            )
            results[f"open, {args.rate:g} req/s"] = await phase(
                f"open loop, {args.rate:g} requests/s", scheduled, processes, redis, layout
            )
        report(results)
        if any(outcome.errors for outcome in results.values()):
            for log in (workdir / "worker.log", workdir / "api.log"):
                noted = [
                    line
                    for line in log.read_text(errors="replace").splitlines()
                    if "WARNING" in line or "ERROR" in line
                ]
                print(f"\n{log.name}, its last warnings and errors:", *noted[-15:], sep="\n  ")
    finally:
        await redis.aclose()
        for process in (demo, api.process, worker):
            await stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--destinations", type=int, default=300)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--keys", type=int, default=200, help="customer keys the portal's users hold")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each phase")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients of the closed loop")
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second of the open loop")
    parser.add_argument("--ingest", type=float, default=2000.0, help="CDRs a second `breakout demo` sends")
    parser.add_argument("--batch", type=int, default=10, help="CDRs per message of `breakout demo`")
    parser.add_argument("--workers", type=int, help="`breakout api --workers N` (default: not passed)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-load-"))
    kafka, redis_url, stops = start_services(workdir)
    try:
        asyncio.run(run(args, kafka, redis_url, workdir))
    finally:
        for command in stops:
            subprocess.run(command, check=False)
        shutil.rmtree(workdir, ignore_errors=True)  # the broker's and Redis's data: hundreds of MB


if __name__ == "__main__":
    main()

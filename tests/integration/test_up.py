"""``breakout up --demo``: the embedded system comes up, answers, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _collect(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.decode(errors="replace"))


def _printed_keys(lines: list[str], wait: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        keys = {}
        for line in list(lines):
            if "API key (" in line:
                role = line.split("API key (")[1].split(",")[0]
                keys[role] = line.rsplit(" ", 1)[1].strip()
        if len(keys) == 2:
            return keys
        time.sleep(0.2)
    return {}


def _eventually_rows(port: int, key: str, wait: float = 90) -> dict[str, Any]:
    """The report of today once it has rows (the demo's first CDRs take a moment; until the
    worker has mirrored every partition, the API answers 503 rather than a partial report)."""
    deadline = time.monotonic() + wait
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/breakout", headers={"Authorization": f"Bearer {key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            assert error.code == 503 and error.headers["Retry-After"], error
            body = json.loads(error.read())
        else:
            if body["rows"]:
                return body
        time.sleep(1)
    raise AssertionError(f"no rows within {wait} s: {body}")


def test_up_serves_reports_with_the_printed_keys_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    api_port = free_port()
    env = {
        **os.environ,
        "BREAKOUT_KAFKA": f"127.0.0.1:{free_port()}",
        "BREAKOUT_REDIS": f"redis://127.0.0.1:{free_port()}/0",
        "BREAKOUT_API_PORT": str(api_port),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--demo", "--rate", "50"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(up, lines), daemon=True)
    reader.start()
    try:
        started = time.monotonic()
        status = None
        while time.monotonic() - started < 60 and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1) as r:
                    status = r.status
            except OSError:
                time.sleep(0.5)
        assert status == 200, "no 200 from /healthz within 60 s"
        keys = _printed_keys(lines)
        assert set(keys) == {"admin", "customer:cust-000"}, lines
        # The printed keys work at once: the demo's traffic shows up in the report.
        body = _eventually_rows(api_port, keys["admin"])
        assert len({row["customer"] for row in body["rows"]}) > 1
        own = _eventually_rows(api_port, keys["customer:cust-000"])
        assert {row["customer"] for row in own["rows"]} == {"cust-000"}
        children = _descendants(up.pid)
        assert len(children) >= 5  # broker, redis, worker, api, demo
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    reader.join(10)
    assert up.returncode == 0, "".join(lines)
    assert [pid for pid in children if _alive(pid)] == []
    # Quiet: the children log to the file named first and last; the console has the rest.
    log = Path(lines[0].removeprefix("starting Breakout; every process logs to ").strip())
    assert lines[-1].strip() == f"stopped; the logs are in {log}"
    assert "[^Worker]: Ready" in log.read_text(errors="replace")
    assert not [line for line in lines if "[INFO]" in line or "[WARNING]" in line], lines
    log.unlink()

"""``breakout up --demo``: the embedded system comes up, answers, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_up_serves_healthz_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    api_port = free_port()
    env = {
        **os.environ,
        "BREAKOUT_KAFKA": f"127.0.0.1:{free_port()}",
        "BREAKOUT_REDIS": f"redis://127.0.0.1:{free_port()}/0",
        "BREAKOUT_API_PORT": str(api_port),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "breakout", "up", "--demo", "--rate", "50"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
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
        children = _descendants(up.pid)
        assert len(children) >= 5  # broker, redis, worker, api, demo
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    output = up.stdout.read().decode() if up.stdout else ""
    assert up.returncode == 0, output
    assert [pid for pid in children if _alive(pid)] == []

"""One user against everyone else, on loopback: the attacks of the hardening review (items 1–5) rerun
against `pixelchat serve`, each bounded in count and time, while an innocent user asks `GET /api/me`
and `/health` every 100 ms. Prints a table: attack, the attacker's statuses, the server's peak RSS,
and the worst latency (and statuses) the innocent user saw meanwhile.

1. streams: one key opens N live event streams at once and holds them for a few seconds
2. sign-in: 30 wrong passwords in a row, then N wrong at once
3. uploads: N concurrent 4096×4096 single-colour PNGs (54 KiB) to /api/describe and
   /v1/images/variations, and N JPEGs of the same size to /api/describe
4. revoked access: a key follows a session, is revoked, and the session takes a turn
5. keys and the queue: one user makes keys until refused, then posts N conversation turns at once
   (Prefer: respond-async) while the innocent user takes one turn

Each attack gets a server of its own: `pixelchat serve` on 127.0.0.1 with a fresh data folder (the
shipped model unless --model), so no attack inherits another's queue, limits or memory. With
PYTHONPATH pointing at another checkout's src, the same attacks run against that code.

    python benchmarks/bench_abuse.py [--streams 64] [--logins 40] [--uploads 64] [--turns 80] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import httpx
from PIL import Image

from _machine import machine

CLI = [sys.executable, "-m", "pixelchat.cli"]
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ACCOUNTS = f"""
import json
from pixelchat.server.admin import create_key, create_user
from pixelchat.server.config import Settings
from pixelchat.server.db import migrate, session_factory
settings = Settings()
migrate(settings.database)
with session_factory(settings.database)() as db:
    keys = {{}}
    for name in ("mallory", "alice"):
        create_user(db, name, {PASSWORD!r})
        keys[name] = create_key(db, name)
print(json.dumps(keys))
"""


def start_server(data: str, model: str | None, log: str | None = None) -> tuple[subprocess.Popen, str, dict, dict]:
    """`pixelchat serve` on a free loopback port with accounts mallory and alice (password and key each)."""
    env = {**os.environ, "PIXELCHAT_DATA_DIR": data, **({"PIXELCHAT_MODEL": model} if model else {})}
    keys = json.loads(subprocess.run([sys.executable, "-c", ACCOUNTS], env=env, check=True, capture_output=True,
                                     text=True).stdout)
    port = free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return proc, base, keys, env
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start in time")


class PeakRSS:
    """The server's resident memory, sampled every 20 ms; ``reset`` starts a new peak."""

    def __init__(self, pid: int):
        self.path, self.peak, self.stop = f"/proc/{pid}/status", 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> int:
        try:
            with open(self.path) as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return 0

    def reset(self) -> None:
        self.peak = self.now()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.now())


class Innocent:
    """Alice asks GET /api/me and /health every 100 ms, each with a 35 s timeout (the pool's is 30 s)."""

    def __init__(self, base: str, key: str):
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=35)
        self.worst, self.statuses, self._stop, self._thread = 0.0, Counter(), threading.Event(), None

    def start(self) -> None:
        self.worst, self.statuses, self._stop = 0.0, Counter(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/api/me", "/health"):
                started = time.perf_counter()
                try:
                    status = self.client.get(path).status_code
                except httpx.TimeoutException:
                    status = "timeout"
                except httpx.TransportError:
                    status = "error"
                self.worst = max(self.worst, time.perf_counter() - started)
                self.statuses[status] += 1
            self._stop.wait(0.1)


def summary(statuses: Counter) -> str:
    return ", ".join(f"{n}×{s}" for s, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))


async def status_of(request) -> int | str:
    try:
        return (await request).status_code
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError:
        return "error"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- the attacks: each returns the attacker's statuses (and notes) --------------------------------------------------

async def streams(base: str, key: str, n: int, hold_s: float = 3.0) -> Counter:
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=15,
                                 limits=httpx.Limits(max_connections=n + 4)) as client:
        session = (await client.post("/api/sessions", json={})).json()["id"]
        statuses: Counter = Counter()

        async def follow():
            try:
                async with client.stream("GET", f"/api/sessions/{session}/events") as r:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        await asyncio.sleep(hold_s)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
            except httpx.TransportError:
                statuses["error"] += 1

        await asyncio.gather(*(follow() for _ in range(n)))
        return statuses


async def sign_ins(base: str, n: int) -> Counter:
    statuses: Counter = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=n + 4)) as client:
        wrong = {"name": "alice", "password": "not the password"}
        for _ in range(30):
            statuses[await status_of(client.post("/api/login", json=wrong))] += 1
        for status in await asyncio.gather(*(status_of(client.post("/api/login", json=wrong)) for _ in range(n))):
            statuses[status] += 1
    return statuses


def picture(fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":  # 54 KiB of one colour that declares 16.7 million pixels
        Image.new("RGB", (4096, 4096), (30, 120, 200)).save(buf, "PNG", optimize=True)
    else:
        Image.new("RGB", (4096, 4096), (30, 120, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


async def uploads(base: str, key: str, n: int, route: str, fmt: str) -> Counter:
    data, statuses = picture(fmt), Counter()
    kind = "image/png" if fmt == "PNG" else "image/jpeg"
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=120,
                                 limits=httpx.Limits(max_connections=n + 4)) as client:
        requests = [status_of(client.post(route, files={"image": (f"big.{fmt.lower()}", data, kind)}))
                    for _ in range(n)]
        for status in await asyncio.gather(*requests):
            statuses[status] += 1
    return statuses


async def revoked(base: str, key: str) -> Counter:
    """'ended' when the revoked key's stream ends without the turn, 'delivered' when the turn reaches it."""
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=60) as client:
        session = (await client.post("/api/sessions", json={})).json()["id"]
        made = (await client.post("/api/keys", json={"name": "second"})).json()
        seen: Counter = Counter()

        async def follow(opened: asyncio.Event, revoked_now: asyncio.Event):
            async with client.stream("GET", f"/api/sessions/{session}/events", headers=auth(made["key"])) as r:
                opened.set()
                async for line in r.aiter_lines():
                    if line.startswith("data:") and '"turn"' in line and revoked_now.is_set():
                        seen["delivered"] += 1
                        return
            seen["ended"] += 1

        opened, revoked_now = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(follow(opened, revoked_now))
        await opened.wait()
        await client.delete(f"/api/keys/{made['id']}")
        revoked_now.set()
        await client.post(f"/api/sessions/{session}/messages", json={"text": "a lake at sunset"})
        try:
            await asyncio.wait_for(task, 30)
        except asyncio.TimeoutError:
            seen["still open"] += 1
        return seen


async def keys_and_queue(base: str, keys: dict[str, str], n: int) -> tuple[Counter, Counter, str]:
    statuses: Counter = Counter()
    async with httpx.AsyncClient(base_url=base, headers=auth(keys["mallory"]), timeout=60,
                                 limits=httpx.Limits(max_connections=n + 8)) as client:
        made = 0
        for i in range(40):  # keys until refused (40 at the most)
            r = await client.post("/api/keys", json={"name": f"k{i}"})
            statuses[f"key {r.status_code}"] += 1
            if r.status_code != 201:
                break
            made += 1
        sessions = [(await client.post("/api/sessions", json={})).json()["id"] for _ in range(n)]
        async with httpx.AsyncClient(base_url=base, headers=auth(keys["alice"]), timeout=120) as alice:
            mine = (await alice.post("/api/sessions", json={})).json()["id"]
            turns = [status_of(client.post(f"/api/sessions/{s}/messages", json={"text": "snowy hills at night"},
                                           headers={"Prefer": "respond-async"})) for s in sessions]
            started = time.perf_counter()

            async def alices_turn():
                await asyncio.sleep(0.05)  # while mallory's turns arrive
                return await status_of(alice.post(f"/api/sessions/{mine}/messages", json={"text": "a forest"}))

            *theirs, hers = await asyncio.gather(*turns, alices_turn())
            waited = time.perf_counter() - started
        for status in theirs:
            statuses[f"turn {status}"] += 1
    return statuses, Counter([hers]), f"{made} keys made; alice's turn {hers} after {waited:.1f} s"


# --- the run ----------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--uploads", type=int, default=64)
    parser.add_argument("--turns", type=int, default=80)
    parser.add_argument("--model", default=None, help="checkpoint to serve (default: the shipped model)")
    parser.add_argument("--only", default="1,2,3,4,5", help="which attacks to run, e.g. 1,3")
    parser.add_argument("--server-log", default=None, help="append the servers' output to this file")
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    attacks = []
    if 1 in only:
        attacks.append((f"1. {args.streams} event streams, one key",
                        lambda base, keys: summary(asyncio.run(streams(base, keys["mallory"], args.streams)))))
    if 2 in only:
        attacks.append((f"2. 30 wrong passwords, then {args.logins} at once",
                        lambda base, keys: summary(asyncio.run(sign_ins(base, args.logins)))))
    if 3 in only:
        for route, fmt in [("/api/describe", "PNG"), ("/v1/images/variations", "PNG"), ("/api/describe", "JPEG")]:
            attacks.append((f"3. {args.uploads} × 4096² {fmt} ({len(picture(fmt)) // 1024} KiB) to {route}",
                            lambda base, keys, route=route, fmt=fmt: summary(asyncio.run(
                                uploads(base, keys["mallory"], args.uploads, route, fmt)))))
    if 4 in only:
        attacks.append(("4. a revoked key's open stream, then a turn",
                        lambda base, keys: summary(asyncio.run(revoked(base, keys["mallory"])))))
    if 5 in only:
        def queue_attack(base, keys):
            statuses, _, note = asyncio.run(keys_and_queue(base, keys, args.turns))
            return f"{summary(statuses)}; {note}"
        attacks.append((f"5. keys until refused; {args.turns} turns at once", queue_attack))

    rows = []
    for name, attack in attacks:
        with tempfile.TemporaryDirectory() as data:
            proc, base, keys, _ = start_server(data, args.model, args.server_log)
            rss, innocent = PeakRSS(proc.pid), Innocent(base, keys["alice"])
            try:
                time.sleep(1.0)
                row = {"attack": name, "idle": rss.now()}
                rss.reset()
                innocent.start()
                started = time.perf_counter()
                row["statuses"] = attack(base, keys)
                row["seconds"] = time.perf_counter() - started
                time.sleep(1.0)  # the innocent user goes on a moment after the attack
                innocent.stop()
                row.update(peak=rss.peak, worst=innocent.worst, innocent=summary(innocent.statuses))
                rows.append(row)
                print(f"  {name}: {row['statuses']} ({row['seconds']:.1f} s)", flush=True)
            finally:
                rss.stop.set()
                proc.terminate()
                try:
                    proc.wait(30)  # requests in flight may hold a graceful stop for a minute
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print("\n| attack | attacker's statuses | s | RSS idle → peak | innocent's worst latency | innocent's statuses |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['attack']} | {r['statuses']} | {r['seconds']:.1f} | {r['idle'] / 2**20:.0f} → "
              f"{r['peak'] / 2**20:.0f} MiB | {r['worst']:.2f} s | {r['innocent']} |")


if __name__ == "__main__":
    main()

"""Load on the server from a second process over loopback: latency of n=1 generations and images/s
with 1, 8 and 32 concurrent clients, with dynamic batching (the default) and without it
(PIXELCHAT_BATCH_IMAGES=1), both with rate limits off; then a burst of concurrent requests and the
statuses it gets, with rate limits off (the queue's bound answers) and with the default limits.

Starts `pixelchat serve` on a free port with a fresh data folder and the shipped model, creates a
user and a key, and drives `POST /v1/images/generations` with httpx from client threads.

    python bench_server.py [--seconds 10] [--burst 500]
"""

from __future__ import annotations

import argparse
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
import numpy as np

from _machine import machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: str, **settings: str) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PIXELCHAT_DATA_DIR": data, **{f"PIXELCHAT_{k.upper()}": v for k, v in settings.items()}}
    cli = [sys.executable, "-m", "pixelchat.cli"]
    subprocess.run([*cli, "users", "create", "bench"], env=env, check=True, capture_output=True)
    key = json.loads(subprocess.run([*cli, "keys", "create", "bench", "--json"], env=env, check=True,
                                    capture_output=True, text=True).stdout)["key"]
    port = free_port()
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return proc, base, key
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def load(base: str, key: str, clients: int, seconds: float) -> dict:
    latencies, statuses, lock = [], Counter(), threading.Lock()
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            j = 0
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = c.post("/v1/images/generations", json={"prompt": "hills by a lake at sunset", "seed": i * 10_000 + j})
                with lock:
                    latencies.append(time.perf_counter() - t)
                    statuses[r.status_code] += 1
                j += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "images_per_s": round(statuses[200] / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "statuses": dict(statuses)}


def burst(base: str, key: str, n: int) -> dict:
    statuses, lock = Counter(), threading.Lock()

    def one(i: int) -> None:
        try:
            r = httpx.post(f"{base}/v1/images/generations", json={"prompt": "a desert at night", "seed": i},
                           headers={"Authorization": f"Bearer {key}"}, timeout=300)
            refused = r.status_code in (429, 503)
            code = r.status_code if not refused or "retry-after" in r.headers else f"{r.status_code} without Retry-After"
        except httpx.TransportError as e:
            code = type(e).__name__
        with lock:
            statuses[code] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"concurrent": n, "seconds": round(time.perf_counter() - t0, 1), "statuses": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--only", choices=["batching", "no batching", "default rate limits"], nargs="+")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    configurations = [("batching", {"rate_limit_per_minute": "0"}),
                      ("no batching", {"rate_limit_per_minute": "0", "batch_images": "1"}),
                      ("default rate limits", {})]
    for name, settings in configurations:
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as data:
            proc, base, key = start_server(data, **settings)
            try:
                load(base, key, 1, 2.0)  # warm-up
                if name != "default rate limits":
                    for clients in args.clients:
                        print(json.dumps({"server": name, **load(base, key, clients, args.seconds)}), flush=True)
                if args.burst and name != "no batching":
                    print(json.dumps({"server": name, **burst(base, key, args.burst)}), flush=True)
            finally:
                proc.terminate()
                proc.wait(60)


if __name__ == "__main__":
    main()

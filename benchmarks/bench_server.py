"""Load on the server from a second process over loopback, against the engine's own speed.

First the engine alone: the shipped model loaded in this process, drawing batches of
``--batch`` pictures at ``--size`` (default: the model's default size) on the runtime `pixelchat serve`
picks, with the server's cores and threads; its pictures/s is what the server is measured against. Then `pixelchat serve` (fresh data
folder, shipped model, SQLite) under n=1 generations at that size from 1, 8 and 32 concurrent clients,
with dynamic batching (the default) and without it (PIXELCHAT_BATCH_IMAGES=1), rate limits off and one
user allowed the whole queue; then a burst of concurrent requests and the statuses it gets, with rate
limits off (the queue's bound answers) and with the default limits.

Cores: with more than one, the server gets all but one (and as many torch threads) and the load
generator (this process's client threads) the last one, each pinned with sched_setaffinity; the
engine alone is measured pinned to the server's cores. ``--no-pin`` lets everything share every core.
Each line printed is one JSON object: the machine and how the cores were shared, the engine alone,
then one per load or burst: pictures/s, its share of the engine's, latency p50/p95/p99, the
answers by status (a transport failure by its exception's name; a 429 or 503 without Retry-After
is counted apart), and the server's CPU time per picture next to the engine's own (a figure that
other work on the machine skews less than pictures/s).

Each load row's figures count the requests started after its first ``--ramp-up`` seconds (3 by
default), when every client has connected and the batches have settled; ``p99_ms_with_ramp_up``
counts them all.

    python bench_server.py [--seconds 10] [--burst 500] [--size 256] [--clients 1 8 32] [--ramp-up 3]
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

PROMPT = "hills by a lake at sunset"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def share_cores(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """The server's cores and the load generator's: all but the last and the last, when pinning is asked
    for and there is more than one core; else (None, None): everything shares every core."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[:-1], cores[-1:]


def server_threads(server_cores: list[int] | None) -> int:
    """The torch threads the server draws with (and the engine alone is measured with)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return len(server_cores) if server_cores else (os.cpu_count() or 1)


def engine_alone(size: int | None, batch: int, seconds: float, threads: int) -> dict:
    """The shipped model's batched pictures/s in this process: ``batch`` pictures per call at ``size``,
    on the runtime `pixelchat serve` draws with (`serving_runtime`)."""
    import torch

    from pixelchat.cli import serving_runtime
    from pixelchat.engines import GenerateRequest, load_engine
    from pixelchat.server.config import Settings

    torch.set_num_threads(threads)
    engine = load_engine(runtime=serving_runtime(Settings()))
    size = size or engine.info.default_size
    requests = lambda first: [GenerateRequest(prompt=PROMPT, n=1, seed=first + i, size=size)  # noqa: E731
                              for i in range(batch)]
    engine.generate_batch(requests(0))  # warm-up: first calls prepare the networks
    drawn, calls, t0, cpu0 = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or calls < 2:
        drawn += sum(len(r) for r in engine.generate_batch(requests(drawn)))
        calls += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"engine": engine.info.id, "runtime": getattr(engine, "runtime", None), "size": size, "batch": batch,
            "threads": threads, "pictures_per_s": round(drawn / elapsed, 1),
            "ms_per_batch": round(1000 * elapsed / calls, 1), "cpu_ms_per_image": round(1000 * cpu / drawn, 1)}


def start_server(data: str, cores: list[int] | None = None, threads: int | None = None,
                 **settings: str) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PIXELCHAT_DATA_DIR": data, **{f"PIXELCHAT_{k.upper()}": v for k, v in settings.items()}}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cli = [sys.executable, "-m", "pixelchat.cli"]
    subprocess.run([*cli, "users", "create", "bench"], env=env, check=True, capture_output=True)
    key = json.loads(subprocess.run([*cli, "keys", "create", "bench", "--json"], env=env, check=True,
                                    capture_output=True, text=True).stdout)["key"]
    port = free_port()
    # pinned before it starts, so every thread it makes inherits the cores
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=pin)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return proc, base, key
        except httpx.TransportError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def status_of(r: httpx.Response) -> int | str:
    refused = r.status_code in (429, 503)
    return r.status_code if not refused or "retry-after" in r.headers else f"{r.status_code} without Retry-After"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, all its threads together (Linux; else 0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(base: str, key: str, clients: int, seconds: float, size: int | None = None, pid: int | None = None,
         ramp_up: float = 0.0) -> dict:
    """``clients`` threads, each sending its next request when the last is answered. The figures count
    the requests started in the ``seconds`` after the first ``ramp_up`` seconds: at the start every
    client connects and sends at once, and the queue's batches take a few cycles to settle
    (``p99_ms_with_ramp_up`` counts every request)."""
    rows, statuses, lock = [], Counter(), threading.Lock()
    t0 = time.perf_counter()
    counted_from, stop = t0 + ramp_up, t0 + ramp_up + seconds
    sized = {"size": f"{size}x{size}"} if size else {}

    def client(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            j = 0
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = c.post("/v1/images/generations", json={"prompt": PROMPT, "seed": i * 10_000 + j, **sized})
                    code = status_of(r)
                except httpx.TransportError as e:
                    code = type(e).__name__
                with lock:
                    rows.append((t >= counted_from, time.perf_counter() - t))
                    if t >= counted_from:
                        statuses[code] += 1
                j += 1

    cpu0 = [cpu_seconds(pid) if pid else 0.0]
    mark = threading.Timer(ramp_up, lambda: cpu0.__setitem__(0, cpu_seconds(pid) if pid else 0.0))
    mark.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mark.join()
    elapsed, cpu = time.perf_counter() - counted_from, (cpu_seconds(pid) - cpu0[0] if pid else 0.0)
    ms = np.array([latency for counted, latency in rows if counted]) * 1000
    p50, p95, p99 = (round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99))
    every = np.array([latency for _, latency in rows]) * 1000
    return {"clients": clients, "requests": len(ms), "images_per_s": round(statuses[200] / elapsed, 1),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "statuses": {str(k): v for k, v in statuses.items()},
            "errors": {str(k): v for k, v in statuses.items() if k != 200},
            **({"ramp_up_s": ramp_up, "p99_ms_with_ramp_up": round(float(np.percentile(every, 99)), 1)} if ramp_up else {}),
            **({"server_cpu_ms_per_image": round(1000 * cpu / max(statuses[200], 1), 1)} if pid else {})}


def burst(base: str, key: str, n: int, size: int | None = None) -> dict:
    statuses, lock = Counter(), threading.Lock()
    sized = {"size": f"{size}x{size}"} if size else {}

    def one(i: int) -> None:
        try:
            r = httpx.post(f"{base}/v1/images/generations", json={"prompt": "a desert at night", "seed": i, **sized},
                           headers={"Authorization": f"Bearer {key}"}, timeout=300)
            code = status_of(r)
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
    return {"concurrent": n, "seconds": round(time.perf_counter() - t0, 1),
            "statuses": {str(k): v for k, v in statuses.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each load row.")
    parser.add_argument("--burst", type=int, default=500, help="Concurrent requests in a burst (0: no burst).")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--ramp-up", type=float, default=3.0, help="Seconds at the start of each load row whose "
                        "requests are not counted (every client connects at once; the batches settle).")
    parser.add_argument("--only", choices=["batching", "no batching", "default rate limits"], nargs="+")
    parser.add_argument("--size", type=int, default=None, help="Side of the pictures asked for; default: the model's "
                                                               "default size.")
    parser.add_argument("--batch", type=int, default=32, help="Pictures per engine call when the engine is measured "
                                                              "alone (the server's PIXELCHAT_BATCH_IMAGES default).")
    parser.add_argument("--engine-seconds", type=float, default=5.0, help="How long the engine alone is measured.")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="Let the server and the load generator share every core instead of pinning them apart.")
    args = parser.parse_args()
    server_cores, client_cores = share_cores(args.pin)
    threads = server_threads(server_cores)
    print(json.dumps({"machine": machine(), "cores": {
        "server": server_cores or "all", "load generator": client_cores or "all", "pinned": server_cores is not None,
        "server threads": threads, "note": "engine alone measured in this process on the server's cores"
        if server_cores else "server, load generator and engine share every core"}}), flush=True)

    if server_cores:
        os.sched_setaffinity(0, server_cores)
    engine = engine_alone(args.size, args.batch, args.engine_seconds, threads)
    size = engine["size"]
    print(json.dumps(engine), flush=True)
    if client_cores:
        os.sched_setaffinity(0, client_cores)  # from here on this process is the load generator

    def share(row: dict) -> dict:
        return {**row, "share_of_engine": round(row["images_per_s"] / engine["pictures_per_s"], 3)}

    # rate limits off and one user allowed the whole queue: one key would otherwise be limited to 600 a
    # minute and to 16 waiting jobs
    unlimited = {"rate_limit_per_minute": "0", "queue_per_user": "1000000"}
    configurations = [("batching", unlimited),
                      ("no batching", {**unlimited, "batch_images": "1"}),
                      ("default rate limits", {})]
    for name, settings in configurations:
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as data:
            proc, base, key = start_server(data, server_cores, threads, **settings)
            try:
                load(base, key, 1, 2.0, size)  # warm-up
                if name != "default rate limits":
                    for clients in args.clients:
                        row = load(base, key, clients, args.seconds, size, proc.pid, args.ramp_up)
                        print(json.dumps({"server": name, "size": size, **share(row)}), flush=True)
                if args.burst and name != "no batching":
                    print(json.dumps({"server": name, "size": size, **burst(base, key, args.burst, size)}), flush=True)
            finally:
                proc.terminate()
                proc.wait(60)


if __name__ == "__main__":
    main()

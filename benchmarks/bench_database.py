"""Many concurrent writers on each database backend: a SQLite file, and PostgreSQL (a throwaway cluster
on loopback started from the newest server binaries here, as the tests do, or --postgres-url).

Each writer thread does what the server does for one generation, through the server's models and session
factory, as three transactions: the job queued (INSERT), claimed (UPDATE ... WHERE status='queued'), and
finished with its image (INSERT image + UPDATE job, one transaction). Reports per backend: transactions,
transactions/s, generations/s, errors by kind, and commit latency p50/p95/p99/max. Prints a table and
writes bench_database.json next to this file.

    python bench_database.py [--seconds 60] [--writers 50] [--postgres-url URL] [--only sqlite postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from sqlalchemy import text, update

from _machine import machine
from pixelchat.server.db import get_engine, migrate, session_factory
from pixelchat.server.models import ImageRow, Job, User, utcnow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgres():
    """A PostgreSQL cluster in a temporary folder on 127.0.0.1 (server defaults: fsync and synchronous
    commits on), as the `postgres` user when run as root; stopped and removed at the end."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not found:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql), or pass --postgres-url")
    bin_dir = max(found, key=lambda p: int(p.parent.name))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="pixelchat-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E",
                        "UTF8", "--locale", "C"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                        "start", "-o", f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200"],
                       check=True, capture_output=True)
        server = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        engine = get_engine(server).execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE pixelchat"))
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/pixelchat"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def writer(url: str, user_id: int, stop: float, latencies: list, errors: Counter, lock: threading.Lock) -> None:
    sessions = session_factory(url)

    def timed(work) -> bool:
        t = time.perf_counter()
        try:
            with sessions() as db:
                work(db)
                db.commit()
        except Exception as e:
            with lock:
                errors[f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"] += 1
            return False
        with lock:
            latencies.append(time.perf_counter() - t)
        return True

    seed = 0
    while time.perf_counter() < stop:
        job_id, image_id, seed = secrets.token_hex(16), secrets.token_hex(16), seed + 1
        payload = {"prompt": "hills by a lake at sunset", "n": 1, "seed": seed, "size": "32x32"}
        record = {"prompt": payload["prompt"], "seed": seed, "model": {"id": "tiny"}, "steps": 1, "tags": ["lake"]}
        queued = lambda db: db.add(Job(id=job_id, user_id=user_id, kind="generate", status="queued",  # noqa: E731
                                       payload=payload, progress=0.0, attempts=0, created=utcnow(), owner="bench",
                                       lease_until=utcnow()))
        claimed = lambda db: db.execute(update(Job).where(Job.id == job_id, Job.status == "queued")  # noqa: E731
                                        .values(status="running", started=utcnow(), attempts=Job.attempts + 1))

        def finished(db):
            db.add(ImageRow(id=image_id, user_id=user_id, sha256=secrets.token_hex(32), prompt=payload["prompt"],
                            record=record, model="tiny", created=utcnow()))
            db.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(
                status="succeeded", progress=1.0, finished=utcnow(), result={"images": [image_id]}))

        if timed(queued) and timed(claimed):
            timed(finished)


def run(url: str, writers: int, seconds: float) -> dict:
    migrate(url)
    with session_factory(url)() as db:
        users = [User(name=f"writer-{i}", created=utcnow()) for i in range(writers)]
        db.add_all(users)
        db.commit()
        ids = [u.id for u in users]
    latencies, errors, lock = [], Counter(), threading.Lock()
    stop = time.perf_counter() + seconds
    threads = [threading.Thread(target=writer, args=(url, i, stop, latencies, errors, lock)) for i in ids]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    with session_factory(url)() as db:
        done = db.scalar(text("SELECT count(*) FROM jobs WHERE status = 'succeeded'"))
        images = db.scalar(text("SELECT count(*) FROM images"))
    ms = np.array(latencies) * 1000
    return {"writers": writers, "seconds": round(elapsed, 1), "transactions": len(latencies),
            "transactions_per_s": round(len(latencies) / elapsed, 1), "generations": done,
            "generations_per_s": round(done / elapsed, 1), "images": images, "errors": sum(errors.values()),
            "error_kinds": dict(errors), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "max_ms": round(float(ms.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--postgres-url", help="a database on an existing PostgreSQL server (its tables are made)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], nargs="+")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    results = []
    for backend in args.only or ["sqlite", "postgresql"]:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as data:
                results.append({"backend": "sqlite", "version": sqlite3.sqlite_version,
                                **run(f"sqlite:///{data}/pixelchat.db", args.writers, args.seconds)})
        else:
            with nullcontext(args.postgres_url) if args.postgres_url else throwaway_postgres() as url:
                with get_engine(url).connect() as conn:
                    version = conn.execute(text("SHOW server_version")).scalar()
                results.append({"backend": "postgresql", "version": version,
                                **run(url, args.writers, args.seconds)})
                get_engine(url).dispose()
        print(json.dumps(results[-1]), flush=True)
    columns = ["backend", "version", "writers", "transactions", "transactions_per_s", "generations_per_s", "errors",
               "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    widths = [max(len(c), *(len(str(r[c])) for r in results)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in results:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)))
    out = Path(__file__).resolve().parent / "bench_database.json"
    out.write_text(json.dumps({"machine": machine(), "seconds": args.seconds, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

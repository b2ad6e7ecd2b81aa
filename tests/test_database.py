"""The database on SQLite and PostgreSQL: migrations both ways, the schema they make against the models,
writers in several threads and processes at once, and the job queue across stops, kills and several
server processes on one database."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text, update

from pixelchat.server.db import downgrade, get_engine, migrate, session_factory
from pixelchat.server.models import Base, ImageRow, Job, User, utcnow

TESTS = Path(__file__).resolve().parent

# each revision: the tables it adds, and the columns it adds to tables made before it
SCHEMA = {
    "0001": ({"users", "api_keys", "images"}, {}),
    "0002": ({"logins", "rooms", "room_members", "sessions", "jobs", "ratings", "votes"},
             {"images": {"model", "session_id"}}),
    "0003": (set(), {"jobs": {"owner", "lease_until"}}),
    "0004": (set(), {}),  # a unique index on votes (user, pair): no table or column
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """An empty database: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pixelchat.db'}"
    return request.getfixturevalue("postgres_url")


def tables(url: str) -> dict[str, set[str]]:
    found = inspect(get_engine(url))
    return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names() if t != "alembic_version"}


def check_schema_at(url: str, revision: str | None) -> None:
    """The database has exactly the tables of the revisions up to ``revision``, and their added columns."""
    upto = [] if revision is None else list(SCHEMA)[:list(SCHEMA).index(revision) + 1]
    found = tables(url)
    assert set(found) == set().union(*(SCHEMA[r][0] for r in upto)), revision
    for r, (_, added) in SCHEMA.items():
        for table, columns in added.items():
            if table in found:
                assert (columns <= found[table]) == (r in upto), (revision, table, columns)


def test_migrations_go_up_and_down_one_revision_at_a_time(database):
    from alembic.script import ScriptDirectory

    from pixelchat.server.db import alembic_config

    revisions = [s.revision for s in reversed(list(ScriptDirectory.from_config(alembic_config(database)).walk_revisions()))]
    assert revisions == list(SCHEMA)  # a new migration is described above
    for revision in revisions:
        migrate(database, revision)
        check_schema_at(database, revision)
        if revision == "0002":  # rows made before 0003 outlive it both ways
            with get_engine(database).begin() as conn:
                conn.execute(text("INSERT INTO users (id, name, created) VALUES (1, 'ada', :now)"), {"now": utcnow()})
                conn.execute(text("INSERT INTO jobs (id, user_id, kind, status, payload, progress, attempts, created) "
                                  "VALUES (:id, 1, 'generate', 'queued', '{}', 0, 0, :now)"),
                             {"id": "j" * 32, "now": utcnow()})
    for revision, before in zip(reversed(revisions), [*reversed(revisions[:-1]), None]):
        downgrade(database, before or "base")
        check_schema_at(database, before)
        if before == "0002":
            with get_engine(database).connect() as conn:
                assert conn.execute(text("SELECT id, status FROM jobs")).all() == [("j" * 32, "queued")]
    migrate(database)
    check_schema_at(database, revisions[-1])


def test_the_migrated_schema_is_the_models(database):
    """What `alembic revision --autogenerate` would see (migrations/env.py targets Base.metadata): nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate(database)
    with get_engine(database).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, Base.metadata) == []


# --- many writers ----------------------------------------------------------------------------------------

def write_rows(url: str, tag: str, n: int) -> None:
    """What the server writes per generation, ``n`` times: a user, a job queued, then its image and the job
    finished in one transaction (the queue's own pattern)."""
    sessions = session_factory(url)
    for i in range(n):
        with sessions() as db:
            user = User(name=f"{tag}-{i}", created=utcnow())
            db.add(user)
            db.flush()
            job = Job(id=secrets.token_hex(16), user_id=user.id, kind="generate", status="queued", progress=0.0,
                      attempts=0, payload={"prompt": "a lake", "n": 1, "seed": i}, created=utcnow())
            db.add(job)
            db.commit()
        with sessions() as db:
            image = ImageRow(id=secrets.token_hex(16), user_id=user.id, sha256=secrets.token_hex(32), prompt="a lake",
                             record={"prompt": "a lake", "seed": i, "tags": ["lake", "day"]}, model="tiny",
                             created=utcnow())
            db.add(image)
            finished = db.execute(update(Job).where(Job.id == job.id, Job.status == "queued").values(
                status="succeeded", progress=1.0, finished=utcnow(), result={"images": [image.id]}))
            assert finished.rowcount == 1
            db.commit()


def start_child(args: dict, log: Path) -> subprocess.Popen:
    """This module's `child` in a new Python process; it talks JSON lines on stdin and stdout."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_database; test_database.child()"
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)


def expect(proc: subprocess.Popen, key: str, log: Path):
    """The next message from a child that has ``key``."""
    for line in proc.stdout:
        if line.startswith("{") and key in (message := json.loads(line)):
            return message[key]
    proc.wait(30)
    pytest.fail(f"the child process ended (exit {proc.returncode}) before it said {key!r}:\n{log.read_text()}")


def tell(proc: subprocess.Popen, word: str) -> None:
    proc.stdin.write(word + "\n")
    proc.stdin.flush()


def child() -> None:
    args = json.loads(sys.argv[1])
    say = lambda **message: print(json.dumps(message), flush=True)  # noqa: E731
    if args["mode"] == "write":
        say(ready=True)
        sys.stdin.readline()
        write_rows(args["url"], args["tag"], args["n"])
        say(done=True)
        return
    queue = queue_on(args["url"], Path(args["data"]), args["model"], args["lease_s"])
    ids = [queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": s})[0].id for s in args["seeds"]]
    say(submitted=ids, owner=queue.owner)
    sys.stdin.readline()
    if args["hold"]:  # the engine stalls on the first job until told to go on
        from pixelchat.server import handlers

        run, held = handlers.run, []

        def stalling(queue, job):
            if not held:
                held.append(job.id)
                say(running=job.id)
                while (word := sys.stdin.readline().strip()) != "go on":
                    if word == "lose contact":  # as a long pause or a network split would: leases lapse
                        queue._halt.set()
                        say(lost_contact=True)
            return run(queue, job)

        handlers.run = stalling
    queue.start()
    outcomes = wait_all(queue, ids)
    queue.stop()
    say(outcomes=[[o.job_id, o.status, [r["seed"] for r in o.records], o.ids] for o in outcomes])


def test_many_writers_in_threads_and_processes_at_once(database, tmp_path):
    migrate(database)
    log, n = tmp_path / "child.log", 25
    children = [start_child({"mode": "write", "url": database, "tag": "p", "n": n}, log)]  # and this process
    try:
        for proc in children:
            expect(proc, "ready", log)
        errors: list[BaseException] = []

        def thread(tag: str) -> None:
            try:
                write_rows(database, tag, n)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=thread, args=(f"t{i}",)) for i in range(4)]
        for proc in children:
            tell(proc, "go")
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for proc in children:
            expect(proc, "done", log)
            assert proc.wait(60) == 0, log.read_text()
    finally:
        for proc in children:
            proc.kill()
            proc.wait(30)
    assert errors == []
    total = (len(threads) + len(children)) * n
    with session_factory(database)() as db:
        assert db.scalar(select(func.count()).select_from(User)) == total
        assert db.scalar(select(func.count()).select_from(ImageRow)) == total
        done = db.scalars(select(Job).where(Job.status == "succeeded")).all()
        assert len(done) == total and db.scalar(select(func.count()).select_from(Job)) == total
        images = set(db.scalars(select(ImageRow.id)))
        assert {job.result["images"][0] for job in done} == images
        assert len({u for u in db.scalars(select(User.name))}) == total


# --- the job queue ---------------------------------------------------------------------------------------

def queue_on(url: str, data: Path, model, lease_s: float = 30.0):
    """A server's job queue on ``url`` (generations one at a time), not started."""
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    settings = Settings(data_dir=data, database_url=url, model=str(model), secret_key="s", batch_images=1,
                        job_lease_s=lease_s)
    return create_app(settings, run_migrations=False).state.jobs


def wait_all(queue, job_ids):
    async def main():
        return await asyncio.wait_for(asyncio.gather(*(queue.wait(j) for j in job_ids)), 120)

    return asyncio.run(main())


def migrated_with_user(url: str) -> None:
    migrate(url)
    with session_factory(url)() as db:
        db.add(User(name="ada", created=utcnow()))
        db.commit()


def jobs_in(url: str) -> dict[str, Job]:
    with session_factory(url)() as db:
        return {job.id: job for job in db.scalars(select(Job))}


def images_in(url: str) -> int:
    with session_factory(url)() as db:
        return db.scalar(select(func.count()).select_from(ImageRow))


def test_a_stopped_queue_leaves_its_jobs_to_the_next_start(database, tmp_path, tiny_model):
    migrated_with_user(database)
    first = queue_on(database, tmp_path / "data", tiny_model)
    ids = [first.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": s})[0].id for s in range(4)]
    first.start()
    try:
        early = wait_all(first, ids[:1])
    finally:
        first.stop()
    left = {j.id for j in jobs_in(database).values() if j.status == "queued"}
    assert early[0].status == "succeeded" and ids[0] not in left
    second = queue_on(database, tmp_path / "data", tiny_model)
    assert second.recover() == len(left)  # released by the stop: taken on at once
    second.start()
    try:
        outcomes = wait_all(second, ids)
    finally:
        second.stop()
    assert [o.records[0]["seed"] for o in outcomes] == [0, 1, 2, 3]
    rows = jobs_in(database)
    assert all(rows[i].status == "succeeded" and rows[i].attempts == 1 for i in ids)  # each ran once
    assert {rows[i].owner for i in left} <= {second.owner} and images_in(database) == 4


def test_a_killed_process_jobs_finish_on_the_next_start(database, tmp_path, tiny_model):
    migrated_with_user(database)
    log = tmp_path / "child.log"
    proc = start_child({"mode": "queue", "url": database, "data": str(tmp_path / "data"), "model": str(tiny_model),
                        "seeds": [0, 1, 2], "lease_s": 30.0, "hold": True}, log)
    try:
        ids = expect(proc, "submitted", log)
        tell(proc, "start")
        running = expect(proc, "running", log)
        proc.send_signal(signal.SIGKILL)  # mid-job
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait(30)
    rows = jobs_in(database)
    assert rows[running].status == "running" and {rows[i].status for i in ids if i != running} <= {"queued"}
    queue = queue_on(database, tmp_path / "data", tiny_model)
    # its process is gone from this machine: no need to wait for the 30 s lease
    assert queue.recover() == 3
    queue.start()
    try:
        outcomes = wait_all(queue, ids)
    finally:
        queue.stop()
    assert [(o.status, o.records[0]["seed"]) for o in outcomes] == [("succeeded", 0), ("succeeded", 1),
                                                                    ("succeeded", 2)]
    rows = jobs_in(database)
    assert {i: rows[i].attempts for i in ids} == {i: 2 if i == running else 1 for i in ids}
    assert images_in(database) == 3  # nothing stored twice


def test_two_processes_on_one_database_run_each_job_once(database, tmp_path, tiny_model):
    migrated_with_user(database)
    log = tmp_path / "child.log"
    proc = start_child({"mode": "queue", "url": database, "data": str(tmp_path / "data"), "model": str(tiny_model),
                        "seeds": list(range(100, 106)), "lease_s": 30.0, "hold": False}, log)
    queue = queue_on(database, tmp_path / "data", tiny_model)
    try:
        # both have queued their jobs before either starts: a start must not take the other's
        theirs = expect(proc, "submitted", log)
        ours = [queue.submit(1, "generate", {"prompt": "a lake", "n": 1, "seed": s})[0].id for s in range(6)]
        tell(proc, "start")
        queue.start()
        outcomes = wait_all(queue, ours)
        their_outcomes = expect(proc, "outcomes", log)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        queue.stop()
        proc.kill()
        proc.wait(30)
    rows = jobs_in(database)
    # every waiter got its own job's picture, made in its own process
    assert [(o.job_id, o.status, o.records[0]["seed"]) for o in outcomes] == [
        (job_id, "succeeded", seed) for job_id, seed in zip(ours, range(6))]
    assert [(job_id, status, seeds) for job_id, status, seeds, _ in their_outcomes] == [
        (job_id, "succeeded", [seed]) for job_id, seed in zip(theirs, range(100, 106))]
    assert all(o.ids == rows[o.job_id].result["images"] for o in outcomes)
    assert all(ids == rows[job_id].result["images"] for job_id, _, _, ids in their_outcomes)
    assert {rows[i].owner for i in ours} == {queue.owner} and queue.owner not in {rows[i].owner for i in theirs}
    assert all(job.attempts == 1 and job.status == "succeeded" for job in rows.values())
    assert images_in(database) == 12


def test_a_job_whose_lease_runs_out_passes_to_another_process_once(database, tmp_path, tiny_model):
    migrated_with_user(database)
    log = tmp_path / "child.log"
    proc = start_child({"mode": "queue", "url": database, "data": str(tmp_path / "data"), "model": str(tiny_model),
                        "seeds": [7], "lease_s": 3.0, "hold": True}, log)
    other = queue_on(database, tmp_path / "data", tiny_model, lease_s=3.0)
    try:
        [job_id] = expect(proc, "submitted", log)
        tell(proc, "start")
        assert expect(proc, "running", log) == job_id
        other.start()  # the holder is alive and renews its lease: nothing to take on
        assert other.recover() == 0 and jobs_in(database)[job_id].owner != other.owner
        tell(proc, "lose contact")
        expect(proc, "lost_contact", log)
        deadline = time.monotonic() + 60
        while (job := jobs_in(database)[job_id]).status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.status == "succeeded" and job.owner == other.owner and job.attempts == 2
        tell(proc, "go on")  # the first holder finishes too late: what it made is dropped
        [[_, status, seeds, ids]] = expect(proc, "outcomes", log)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        other.stop()
        proc.kill()
        proc.wait(30)
    job = jobs_in(database)[job_id]
    assert (status, seeds, ids) == ("succeeded", [7], job.result["images"])  # its waiter got the stored answer
    assert images_in(database) == 1


def test_a_session_runs_one_turn_at_a_time_across_processes(database, tmp_path, tiny_model):
    from datetime import timedelta, timezone

    from pixelchat.conversation.session import Session
    from pixelchat.server.models import SessionRow

    migrated_with_user(database)
    with session_factory(database)() as db:
        db.add(SessionRow(id="s" * 32, user_id=1, title="a lake", data=Session().to_json(), created=utcnow(),
                          updated=utcnow()))
        db.flush()
        db.add(Job(id="a" * 32, user_id=1, kind="message", status="running", payload={"text": "a lake"},
                   progress=0.0, attempts=1, session_id="s" * 32, created=utcnow(), owner="elsewhere:1:0",
                   lease_until=utcnow() + timedelta(minutes=5)))  # a turn running in another server process
        db.commit()
    queue = queue_on(database, tmp_path / "data", tiny_model)
    turn = queue.submit(1, "message", {"text": "a lake by day"}, session_id="s" * 32)[0].id
    queue.start()
    try:
        time.sleep(1.0)  # the worker tries the turn meanwhile, and must leave it queued
        with session_factory(database)() as db:
            db.get(Job, "a" * 32).status = "succeeded"
            released = utcnow()
            db.commit()
        [outcome] = wait_all(queue, [turn])
    finally:
        queue.stop()
    assert outcome.status == "succeeded"
    started = jobs_in(database)[turn].started
    assert (started if started.tzinfo else started.replace(tzinfo=timezone.utc)) >= released  # (SQLite: naive UTC)

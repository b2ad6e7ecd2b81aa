"""The job queue: every piece of engine work (generate, edit, vary, describe, a conversation turn)
is a job, persisted before it runs and finished in one transaction with what it made, so a crash
or restart re-runs what was interrupted and nothing is done twice.

One worker thread owns the engine. Generation requests waiting together are drawn in one forward
pass (dynamic batching: up to ``batch_images`` images, waiting at most ``batch_wait_ms`` for more).
The queue is bounded: when ``queue_size`` jobs wait, a new one is refused at once (503); so is one
user's job past their share, ``queue_per_user`` waiting (429), so one user cannot fill the queue.

Several server processes may share one database. Each queue runs the jobs submitted to it: a job's
row names its ``owner`` (the queue) and a lease the owner renews every third of ``job_lease_s``. A
job is marked running only by an atomic update that checks it is still queued for this queue, and
finished only by one that checks it is still this queue's. A queue takes over the unfinished jobs of
a process that stopped (it released them), died (its lease ran out), or is gone from this machine.

What a request costs besides drawing is kept small. Rows are written in groups: the jobs submitted
at the same moment are inserted in one transaction (one commit), each committed before its job is
queued, so a job whose answer was sent is always on disk; a batch's jobs are marked running in one
update and finished, with all their pictures' rows, in one transaction that commits before any of
their requests is answered. Storing a batch (PNG encoding with the record, watermark and signature,
the files, that transaction) runs on a finishing thread while the worker draws the next batch; at
most ``FINISHING`` batches wait to be stored, so the engine never runs far ahead of the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image
from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from pixelchat.server.errors import APIError
from pixelchat.server.models import ImageRow, Job, SessionRow

log = logging.getLogger("pixelchat.server.jobs")
FINAL = ("succeeded", "failed")
MAX_ATTEMPTS = 3  # a job interrupted this often (by crashes) is failed instead of run again
BATCHED = ("generate", "preview")  # kinds drawn together in one forward pass
EPHEMERAL = ("preview",)  # kinds whose pictures go back to the caller only: not stored, the job row dropped
POLL_S = 1.0  # how often a waiter looks in the database for a job this queue does not hold
RETRY_S = 0.5  # how soon a conversation turn is tried again while the session's previous turn runs elsewhere
FINISHING = 2  # batches drawn and not yet stored: the worker waits for one to be stored before drawing more


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def this_machine() -> str | None:
    """This boot of this machine and its process namespace (Linux), or None: within it, a job's owner
    that no longer runs can be told at once from one that is alive."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


MACHINE = this_machine()
LIVE: set[str] = set()  # the owners of this process's started queues


def owner_gone(owner: str) -> bool:
    """Whether the queue ``owner`` names surely runs no more: its process on this machine has exited,
    or it is this process's and not started. Elsewhere only its lease can tell."""
    machine, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if MACHINE is None or machine != MACHINE or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner not in LIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def request_hash(route: str, fields: dict) -> str:
    """What an Idempotency-Key is bound to: the route and its canonical body."""
    return hashlib.sha256(json.dumps([route, fields], sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Outcome:
    """A finished job as the route that waits for it needs it: the stored pictures (ids, PNG bytes,
    images, records) and the job's result and error."""

    job_id: str
    status: str
    result: dict = field(default_factory=dict)
    error: dict | None = None
    ids: list[str] = field(default_factory=list)
    pngs: list[bytes] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    def raise_error(self) -> None:
        if self.error is not None:
            e = self.error
            raise APIError(e.get("status", 500), e.get("message", "the job failed"), param=e.get("param"),
                           code=e.get("code"))


@dataclass
class Made:
    """What a handler made for one job: pictures to store (with records) and a result."""

    images: list[Image.Image] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    session_data: str | None = None  # the conversation after the turn


@dataclass(eq=False)
class _Row:
    """A job row waiting to be inserted with the others submitted at the same moment."""

    job: Job
    written: bool = False  # its group's write is over (committed or not)
    committed: bool = False
    error: BaseException | None = None  # why it was not committed


def remove_uploads(folder: Path, job_id: str) -> int:
    """Remove the uploaded pictures of job ``job_id`` (`JobQueue.upload_path`) from ``folder``; how many.
    Job ids are hex: nothing in them globs."""
    removed = 0
    for path in folder.glob(f"{job_id}-*.png") if folder.is_dir() else ():
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class JobQueue:
    def __init__(self, settings, sessions, store, events):
        self.settings, self.sessions, self.store, self.events = settings, sessions, store, events
        self.uploads = settings.uploads_dir
        self._pending: deque[str] = deque()
        self._kinds: dict[str, tuple[str, int, str | None]] = {}  # pending job id → (kind, images, session)
        self._users: dict[str, int] = {}  # pending job id → its user
        self._reserving: Counter[int] = Counter()  # users with jobs being written (counted in their share)
        self._busy: set[str] = set()  # sessions with a turn being run: their next turn waits for it
        self._cond = threading.Condition()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._reserved = 0
        self._write = threading.Lock()
        self.llm = None
        self.checkers: list = []  # output checkers (pixelchat.safety.checkers) every picture must pass
        self.running: set[str] = set()  # taken by a worker and not yet resolved
        self.batches: list[int] = []  # images per engine call, most recent last (bounded)
        self._ephemeral: dict[str, Outcome] = {}  # finished previews nobody waited for yet
        self.owner = f"{MACHINE or '-'}:{os.getpid()}:{secrets.token_hex(4)}"  # this queue, in the jobs it holds
        self.lease = timedelta(seconds=settings.job_lease_s)
        self._later: dict[str, float] = {}  # sessions whose turn runs in another process → when to try again
        self._halt = threading.Event()  # stops the lease keeper
        self._rows: list[_Row] = []  # job rows waiting for the next group insert
        self._inserting = threading.Condition()  # guards _rows and _leader
        self._leader = False  # a thread is writing a group of rows now
        self._finishers: ThreadPoolExecutor | None = None  # stores drawn batches while the worker draws on
        self._slots = threading.Semaphore(FINISHING)

    @contextmanager
    def writing(self):
        """A database session for the queue's writes, one at a time: SQLite has one writer, and
        waiting on a lock here is fair and prompt where SQLite's busy handler sleeps and backs off."""
        with self._write, self.sessions() as db:
            yield db

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, workers: int = 1) -> None:
        from pixelchat.conversation.llm import rewriter_from_env

        self.llm = rewriter_from_env()  # PIXELCHAT_LLM_URL etc.: conversations read changes with it
        LIVE.add(self.owner)
        self._stopping = False
        self.recover()
        self._halt.clear()
        keeper = threading.Thread(target=self._keep_leases, name="pixelchat-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        self._finishers = ThreadPoolExecutor(FINISHING, thread_name_prefix="pixelchat-finish")
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"pixelchat-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the jobs being run and stop; queued jobs stay queued in the database for the next start
        (here or in another process)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        keepers = [t for t in self._threads if t.name == "pixelchat-leases"]
        for t in self._threads:
            if t not in keepers:
                t.join(timeout)
        if self._finishers is not None:  # the batches drawn are stored and answered
            self._finishers.shutdown(wait=True)
            self._finishers = None
        self._halt.set()  # the leases were renewed while the running jobs finished
        for t in keepers:
            t.join(timeout)
        self._threads = []
        with self.writing() as db:  # released: any queue may take them at once
            db.execute(update(Job).where(Job.owner == self.owner, Job.status == "queued")
                       .values(owner=None, lease_until=None))
            db.commit()
        LIVE.discard(self.owner)

    def recover(self) -> int:
        """Take on the unfinished jobs no live queue holds (released, their lease run out, or their process
        gone from this machine), oldest first; returns how many."""
        now = utcnow()
        with self.sessions() as db:
            held = db.execute(select(Job.owner).distinct().where(
                Job.status.not_in(FINAL), Job.owner != self.owner, Job.lease_until >= now)).scalars().all()
        gone = [owner for owner in held if owner_gone(owner)]
        orphaned = or_(Job.owner.is_(None), Job.lease_until.is_(None), Job.lease_until < now, Job.owner.in_(gone))
        with self.writing() as db:
            # PostgreSQL: rows another queue is taking on right now are left to it, with no waiting
            candidates = db.scalars(select(Job.id).where(
                Job.status.not_in(FINAL), or_(Job.owner.is_(None), Job.owner != self.owner), orphaned)
                .order_by(Job.id).with_for_update(skip_locked=True)).all()
            if not candidates:
                return 0
            # a lost process's previews: nobody waits for them any more
            db.execute(delete(Job).where(Job.id.in_(candidates), Job.kind.in_(EPHEMERAL), orphaned)
                       .execution_options(synchronize_session=False))
            # each row changes owner only if it is still orphaned, so two queues cannot both take it
            db.execute(update(Job).where(Job.id.in_(candidates), Job.status.not_in(FINAL), orphaned)
                       .values(owner=self.owner, lease_until=now + self.lease, status="queued")
                       .execution_options(synchronize_session=False))
            taken = Job.id.in_(candidates), Job.owner == self.owner, Job.status == "queued"
            db.execute(update(Job).where(*taken, Job.attempts >= MAX_ATTEMPTS)
                       .values(status="failed", finished=now, lease_until=None, error={
                           "status": 500, "message": f"the job was interrupted {MAX_ATTEMPTS} times; not retried",
                           "code": "interrupted", "param": None})
                       .execution_options(synchronize_session=False))
            db.commit()
            rows = db.execute(select(Job.id, Job.kind, Job.payload, Job.session_id, Job.user_id).where(*taken)
                              .order_by(Job.created)).all()
        with self._cond:
            for job_id, kind, payload, session_id, user_id in rows:
                if job_id not in self._kinds:
                    self._pending.append(job_id)
                    self._kinds[job_id] = (kind, int(payload.get("n", 1)), session_id)
                    self._users[job_id] = user_id
            self._cond.notify_all()
        if rows:
            log.info("took on %d unfinished jobs", len(rows))
        return len(rows)

    def _keep_leases(self) -> None:
        """Every third of the lease: renew this queue's claims, and take on jobs whose owner is lost."""
        while not self._halt.wait(self.lease.total_seconds() / 3):
            try:
                with self.writing() as db:
                    db.execute(update(Job).where(Job.owner == self.owner, Job.status.not_in(FINAL))
                               .values(lease_until=utcnow() + self.lease))
                    db.commit()
                if not self._stopping:
                    self.recover()
            except Exception:  # the database may be away for a moment; the next round tries again
                log.exception("renewing the job leases failed")

    # --- submitting and waiting ------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def submit(self, user_id: int, kind: str, payload: dict, *, session_id: str | None = None,
               idempotency_key: str | None = None, fingerprint: str | None = None,
               files: dict[str, Image.Image] | None = None) -> tuple[Job, bool]:
        """Persist and queue a job; returns it and whether it is new. With an Idempotency-Key seen
        before: the same request returns the first job, another request is refused (409)."""
        if idempotency_key is not None:
            if len(idempotency_key) > 255 or not idempotency_key.strip():
                raise APIError(400, "Idempotency-Key must be 1–255 characters.", param="Idempotency-Key",
                               code="invalid_value")
            with self.sessions() as db:
                old = db.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == idempotency_key))
            if old is not None:
                return self.reuse(old, fingerprint), False
        with self._cond:
            if self._stopping:
                raise APIError(503, "The server is shutting down; try again in a moment.", code="server_busy",
                               headers={"Retry-After": "5"})
            share = self.settings.queue_per_user
            if self._reserving[user_id] + sum(1 for j in self._pending if self._users.get(j) == user_id) >= share:
                raise APIError(429, f"You have {share} jobs waiting, your share of the queue: wait for them to "
                                    "finish.", code="queue_share_exceeded", headers={"Retry-After": "1"})
            if len(self._pending) + self._reserved >= self.settings.queue_size:
                raise APIError(503, "The server is busy; try again in a moment.", code="server_busy",
                               headers={"Retry-After": "1"})
            self._reserved += 1  # counts against the capacity while its row is written
            self._reserving[user_id] += 1
            self._cond.notify_all()  # a batch being gathered waits for it
        job_id = secrets.token_hex(16)
        try:
            if files:
                self.uploads.mkdir(parents=True, exist_ok=True)
                for name, image in files.items():
                    image.save(self.upload_path(job_id, name), format="PNG")
                    payload = {**payload, name: True}
            job = Job(id=job_id, user_id=user_id, kind=kind, status="queued", payload=payload, progress=0.0,
                      attempts=0, idempotency_key=idempotency_key, request_hash=fingerprint, session_id=session_id,
                      created=utcnow(), owner=self.owner, lease_until=utcnow() + self.lease)
            self._insert(job)
        except IntegrityError:  # the same key raced in from another request
            self._cleanup(job_id)
            with self.sessions() as db:
                old = db.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == idempotency_key))
            return self.reuse(old, fingerprint), False
        except BaseException:
            self._cleanup(job_id)
            raise
        else:
            with self._cond:  # queued before it stops counting as reserved, so a gathering batch sees it
                self._pending.append(job_id)
                self._kinds[job_id] = (kind, int(payload.get("n", 1)), session_id)
                self._users[job_id] = user_id
        finally:
            with self._cond:
                self._reserved -= 1
                self._reserving[user_id] -= 1
                if self._reserving[user_id] <= 0:
                    del self._reserving[user_id]
                self._cond.notify_all()
        self.publish(job)
        return job, True

    def _insert(self, job: Job) -> None:
        """Insert ``job``'s row together with those other requests submit at this moment, in one
        transaction; returns once it is committed (or raises what writing it raised). One thread writes
        a group while the rows arriving meanwhile wait to form the next one."""
        row = _Row(job)
        with self._inserting:
            self._rows.append(row)
            while not row.written and self._leader:
                self._inserting.wait()
            group = None
            if not row.written:  # no group is being written: this thread writes the rows waiting
                self._leader, group, self._rows = True, self._rows, []
        if group is not None:
            try:
                self._write_rows(group)
            finally:
                with self._inserting:
                    for r in group:
                        r.written = True
                    self._leader = False
                    self._inserting.notify_all()
        if not row.committed:
            raise row.error or RuntimeError("the job's row was not written")

    def _write_rows(self, group: list[_Row]) -> None:
        """One transaction for the group; where it fails, each row alone, so only the row at fault (a
        reused Idempotency-Key) gets the error."""
        error = self._commit_rows(group)
        if error is None:
            return
        if len(group) == 1:
            group[0].error = error
            return
        for r in group:
            r.error = self._commit_rows([r])

    def _commit_rows(self, rows: list[_Row]) -> BaseException | None:
        """Insert ``rows`` in one transaction and mark them committed; what it raised, if it failed."""
        try:
            with self.writing() as db:
                db.add_all([r.job for r in rows])
                db.commit()
        except Exception as e:
            return e
        for r in rows:
            r.committed = True
        return None

    def reuse(self, job: Job, fingerprint: str | None) -> Job:
        if job.request_hash != fingerprint:
            raise APIError(409, "This Idempotency-Key was used with another request; use a new key.",
                           param="Idempotency-Key", code="idempotency_key_reused")
        return job

    def upload_path(self, job_id: str, name: str) -> Path:
        return self.uploads / f"{job_id}-{name}.png"

    async def wait(self, job_id: str) -> Outcome:
        """The finished job (waits while it is queued or running, here or in another process)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if job_id in self._ephemeral:  # finished before anyone waited; its row is gone
                return self._ephemeral.pop(job_id)
            self._waiters.setdefault(job_id, []).append((loop, future))
        try:
            while True:
                with self._cond:
                    in_hand = job_id in self._kinds or job_id in self.running  # its worker will resolve the future
                if not in_hand:  # another process holds it, or it is finished or gone: the database says
                    job = await asyncio.to_thread(self.load, job_id)
                    if job is None:
                        return Outcome(job_id, "failed", {}, {"status": 404, "message": "No such job.",
                                                              "code": "not_found", "param": None})
                    if job.status in FINAL:
                        return await asyncio.to_thread(self.outcome_of, job)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), POLL_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._drop_waiter(job_id, future)

    def load(self, job_id: str) -> Job | None:
        with self.sessions() as db:
            return db.get(Job, job_id)

    def _drop_waiter(self, job_id: str, future) -> None:
        with self._cond:
            waiters = [w for w in self._waiters.get(job_id, []) if w[1] is not future]
            if waiters:
                self._waiters[job_id] = waiters
            else:
                self._waiters.pop(job_id, None)

    def outcome_of(self, job: Job) -> Outcome:
        """A finished job rebuilt from the database and the image store."""
        ids = list((job.result or {}).get("images", []))
        out = Outcome(job.id, job.status, job.result or {}, job.error, ids)
        with self.sessions() as db:
            rows = {r.id: r for r in db.scalars(select(ImageRow).where(ImageRow.id.in_(ids)))} if ids else {}
        for i in ids:
            row = rows.get(i)
            if row is None:  # deleted by its owner since
                continue
            png = self.store.get(row.sha256)
            out.pngs.append(png)
            out.images.append(Image.open(io.BytesIO(png)).convert("RGB"))
            out.records.append(row.record)
        out.ids = [i for i in ids if i in rows]
        return out

    def publish(self, job: Job, **extra) -> None:
        event = {"type": "job", "job": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
                 **extra}
        self.events.publish(f"job:{job.id}", event)

    # --- the worker ------------------------------------------------------------------------------

    def _take(self) -> tuple[list[str], str | None] | None:
        """The next batch of job ids: one job, or compatible generation jobs gathered for a short while."""
        s = self.settings
        with self._cond:
            while (first := self._next()) is None:
                if self._stopping:
                    return None
                self._cond.wait(0.5)
            if self._stopping:
                return None
            self._pending.remove(first)
            kind, images, session_id = self._kinds.pop(first)
            self._users.pop(first, None)
            self._later.pop(session_id, None)
            self.running.add(first)  # in hand from here until its waiters are answered
            batch = [first]
            if session_id is not None:
                self._busy.add(session_id)
            if kind not in BATCHED:
                return batch, session_id
            deadline = time.monotonic() + s.batch_wait_ms / 1000
            while images < s.batch_images:
                for job_id in list(self._pending):
                    k, n, _ = self._kinds[job_id]
                    if k in BATCHED and images + n <= s.batch_images:
                        self._pending.remove(job_id)
                        del self._kinds[job_id]
                        self._users.pop(job_id, None)
                        self.running.add(job_id)
                        batch.append(job_id)
                        images += n
                left = deadline - time.monotonic()
                # wait only for requests being submitted right now: a lone request is not held back
                if left <= 0 or images >= s.batch_images or self._stopping or not self._reserved:
                    break
                self._cond.wait(left)
            return batch, None

    def _next(self) -> str | None:
        """The oldest pending job that may run now (a session runs one turn at a time)."""
        now = time.monotonic()
        for job_id in self._pending:
            session_id = self._kinds[job_id][2]
            if session_id is None or (session_id not in self._busy and self._later.get(session_id, 0) <= now):
                return job_id
        return None

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, session_id = taken
            handed_on = False
            try:
                handed_on = self._run(batch, session_id)
            except Exception:  # a bug must not stop the worker; the jobs are failed and said so
                self._failed(batch)
            finally:
                if not handed_on:
                    self._release(batch, session_id)

    def _failed(self, batch: list[str]) -> None:
        log.exception("jobs %s failed", batch)
        for job_id in batch:
            self._fail(job_id, {"status": 500, "message": "The server failed on this request.",
                                "code": "server_error", "param": None})

    def _release(self, batch: list[str], session_id: str | None) -> None:
        """The batch is out of hand: its jobs are resolved, and the session's next turn may run."""
        with self._cond:
            self._busy.discard(session_id)
            self.running.difference_update(batch)
            self._cond.notify_all()

    def _run(self, batch: list[str], session_id: str | None = None) -> bool:
        """Run the batch; returns whether storing what it made was handed to a finishing thread (which
        then releases the batch), else it is stored and answered here."""
        jobs, done = self._claim(batch)
        for job in done:
            self._resolve(job.id, self.outcome_of(job))
        for job in jobs:
            self.publish(job)
        results = self._handle(jobs)
        for job, made in zip(jobs, results):
            if isinstance(made, APIError):
                self._fail(job.id, {"status": made.status, "message": made.message, "param": made.param,
                                    "code": made.code})
        ok = [(job, made) for job, made in zip(jobs, results) if not isinstance(made, APIError)]
        # a conversation's turn is stored before its session's next turn may start: only jobs outside
        # sessions are stored while the worker goes on
        finishers = self._finishers
        if ok and session_id is None and finishers is not None:
            self._slots.acquire()  # at most FINISHING batches wait to be stored
            try:
                finishers.submit(self._finish_later, ok, batch)
                return True
            except RuntimeError:  # shutting down: stored here
                self._slots.release()
        self._finish(ok)
        return False

    def _finish_later(self, done: list[tuple[Job, Made]], batch: list[str]) -> None:
        """`_finish` on a finishing thread, then the batch released."""
        try:
            self._finish(done)
        except Exception:
            self._failed([job.id for job, _ in done])
        finally:
            self._slots.release()
            self._release(batch, None)

    def _claim(self, batch: list[str]) -> tuple[list[Job], list[Job]]:
        """Mark the batch's jobs running, in one update that takes only those still queued for this queue
        and not in a session whose previous turn runs (anywhere); returns them and the finished ones."""
        now, other = utcnow(), aliased(Job)
        turn_running = exists().where(other.session_id == Job.session_id, other.status == "running", other.id != Job.id)
        with self.writing() as db:
            # PostgreSQL: the session's row lock orders two processes' claims on it (SQLite has one writer)
            db.execute(select(SessionRow.id).where(SessionRow.id.in_(
                select(Job.session_id).where(Job.id.in_(batch)))).with_for_update())
            db.execute(update(Job).where(Job.id.in_(batch), Job.status == "queued", Job.owner == self.owner,
                                         or_(Job.session_id.is_(None), ~turn_running))
                       .values(status="running", started=now, attempts=Job.attempts + 1, lease_until=now + self.lease)
                       .execution_options(synchronize_session=False))
            rows = {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(batch)))}
            db.commit()
            db.expunge_all()
        jobs, done = [], []
        for job_id in batch:
            job = rows.get(job_id)
            if job is None:  # deleted while it waited: its waiters hear so
                self._resolve(job_id, Outcome(job_id, "failed", {}, {
                    "status": 404, "message": "The job was deleted.", "code": "not_found", "param": None}))
            elif job.status in FINAL:  # finished already: its waiters get that
                done.append(job)
            elif job.owner != self.owner:
                pass  # another process took it over: waiters here read its outcome from the database
            elif job.status == "queued":  # the session's previous turn runs in another process
                with self._cond:
                    self._pending.appendleft(job_id)
                    self._kinds[job_id] = (job.kind, int(job.payload.get("n", 1)), job.session_id)
                    self._users[job_id] = job.user_id
                    self._later[job.session_id] = time.monotonic() + RETRY_S
            else:
                jobs.append(job)
        return jobs, done

    def _handle(self, jobs: list[Job]) -> list[Made | APIError]:
        return [self._checked(made) for made in self._made(jobs)]

    def _checked(self, made: Made | APIError) -> Made | APIError:
        """The job's pictures through the operator's output checkers: one that fails withholds them all."""
        from pixelchat.safety.checkers import run_checkers

        if isinstance(made, APIError) or not self.checkers:
            return made
        for image, record in zip(made.images, made.records):
            failed = run_checkers(self.checkers, image, record)
            if failed is not None:
                log.info("output check %s withheld a picture: %s", failed.checker, failed.reason)
                return APIError(400, f"The picture was withheld by an output check ({failed.checker}): {failed.reason}",
                                code="content_policy_violation")
        return made

    def _made(self, jobs: list[Job]) -> list[Made | APIError]:
        from pixelchat.server import handlers

        if len(jobs) > 1:
            self.batches = (self.batches + [sum(int(j.payload.get("n", 1)) for j in jobs)])[-1000:]
            try:
                return handlers.generate_batch(self, jobs)
            except APIError:
                pass  # one bad request in the batch: run each alone so only it fails
        out = []
        for job in jobs:
            if len(jobs) == 1:
                self.batches = (self.batches + [int(job.payload.get("n", 1))])[-1000:]
            try:
                out.append(handlers.run(self, job))
            except APIError as e:
                out.append(e)
        return out

    def _finish(self, done: list[tuple[Job, Made]]) -> None:
        """Store what the jobs made and mark them succeeded, all in one transaction."""
        from pixelchat.imagefiles import png_bytes

        finished, files = [], []
        for job, made in done:  # the files first (content-addressed, so a re-run writes the same names)
            pngs = [png_bytes(image, record) for image, record in zip(made.images, made.records)]
            files.append((pngs, [] if job.kind in EPHEMERAL else [self.store.put(png) for png in pngs]))
        with self.writing() as db:
            for (job, made), (pngs, shas) in zip(done, files):
                ours = Job.id == job.id, Job.owner == self.owner, Job.status == "running"
                if job.kind in EPHEMERAL:
                    # nothing is kept of a preview, but a row with an Idempotency-Key stays (without the
                    # picture): its key stays bound to its request, and a retry is drawn again from its seeds
                    result = {**made.result, "seeds": [record.get("seed") for record in made.records]}
                    forget = delete(Job) if job.idempotency_key is None else update(Job).values(
                        status="succeeded", progress=1.0, finished=utcnow(), lease_until=None, result=result)
                    if db.execute(forget.where(*ours).execution_options(synchronize_session=False)).rowcount:
                        job.status, job.progress, job.result = "succeeded", 1.0, result
                        finished.append((job, Outcome(job.id, "succeeded", result, None, [], pngs, made.images,
                                                      made.records)))
                    continue
                ids = [secrets.token_hex(16) for _ in pngs]
                result = {**made.result, "images": ids}
                # finished only while still this queue's: one whose lease ran out is another's now
                if not db.execute(update(Job).where(*ours).values(
                        status="succeeded", progress=1.0, finished=utcnow(), lease_until=None, result=result)
                        .execution_options(synchronize_session=False)).rowcount:
                    continue
                for image_id, sha, record in zip(ids, shas, made.records):
                    model = record.get("model", {}).get("id") if isinstance(record.get("model"), dict) else None
                    db.add(ImageRow(id=image_id, user_id=job.user_id, sha256=sha,
                                    prompt=str(record.get("prompt", ""))[:1000], record=record, model=model,
                                    session_id=job.session_id, created=utcnow()))
                if made.session_data is not None:
                    session = db.get(SessionRow, job.session_id)
                    if session is not None:
                        session.data, session.updated = made.session_data, utcnow()
                job.status, job.progress, job.result = "succeeded", 1.0, result
                finished.append((job, Outcome(job.id, "succeeded", result, None, ids, pngs, made.images,
                                              made.records)))
            db.commit()
        for row, outcome in finished:
            self._cleanup(outcome.job_id)
            self.publish(row)
            if row.session_id:
                self.publish_turn(row)
            self._resolve(outcome.job_id, outcome, ephemeral=row.kind in EPHEMERAL)

    def _fail(self, job_id: str, error: dict) -> None:
        with self.writing() as db:
            ours = Job.id == job_id, Job.owner == self.owner, Job.status.not_in(FINAL)
            row = db.scalar(select(Job).where(*ours))
            if row is None:  # deleted, finished, or another process's now: waiters read the database
                return
            ephemeral, now = row.kind in EPHEMERAL, utcnow()
            change = delete(Job) if ephemeral else update(Job).values(status="failed", error=error, finished=now,
                                                                      lease_until=None)
            changed = db.execute(change.where(*ours).execution_options(synchronize_session=False)).rowcount
            db.commit()
            db.expunge(row)
        if not changed:
            return
        row.status, row.error, row.finished, row.lease_until = "failed", error, now, None
        self._cleanup(job_id)
        self.publish(row, error=error)
        self._resolve(job_id, Outcome(job_id, "failed", {}, error), ephemeral=ephemeral)

    def publish_turn(self, job: Job) -> None:
        with self.sessions() as db:
            session = db.get(SessionRow, job.session_id)
            room = session.room_id if session is not None else None
        event = {"type": "turn", "session": job.session_id, "job": job.id, "user": job.user_id,
                 "turn": job.result.get("turn"), "images": job.result.get("images", [])}
        self.events.publish(f"session:{job.session_id}", event)
        if room:
            self.events.publish(f"room:{room}", event)

    def _cleanup(self, job_id: str) -> None:
        remove_uploads(self.uploads, job_id)

    def _resolve(self, job_id: str, outcome: Outcome, ephemeral: bool = False) -> None:
        with self._cond:
            waiters = self._waiters.pop(job_id, [])
            if ephemeral and not waiters:  # kept a moment for a waiter still on its way (bounded)
                self._ephemeral[job_id] = outcome
                while len(self._ephemeral) > 256:
                    self._ephemeral.pop(next(iter(self._ephemeral)))
        for loop, future in waiters:
            def settle(f=future):
                if not f.done():
                    f.set_result(outcome)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # that request's loop is gone
                pass

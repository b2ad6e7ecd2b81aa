"""Jobs: the status, progress and result of queued work, and a live stream of its events."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from pixelchat.server.deps import CurrentUser, SessionDep, still_allowed
from pixelchat.server.errors import APIError, responses
from pixelchat.server.events import event_stream
from pixelchat.server.jobs import FINAL
from pixelchat.server.models import Job
from pixelchat.server.routes import Timestamp

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


class JobPublic(BaseModel):
    id: str
    kind: str
    status: str
    progress: float
    session_id: str | None
    created: Timestamp
    started: Timestamp | None
    finished: Timestamp | None
    result: dict | None
    error: dict | None


class JobList(BaseModel):
    data: list[JobPublic]


def public(job: Job) -> JobPublic:
    return JobPublic(id=job.id, kind=job.kind, status=job.status, progress=job.progress, session_id=job.session_id,
                     created=job.created, started=job.started, finished=job.finished, result=job.result,
                     error=job.error)


def own(db, user, job_id: str) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.user_id != user.id:
        raise APIError(404, f"No job '{job_id}'.", param="job_id", code="not_found")
    return job


@router.get("", response_model=JobList)
def list_jobs(user: CurrentUser, db: SessionDep, status: str | None = Query(None, pattern="^(queued|running|succeeded|failed)$"),
              limit: int = Query(50, ge=1, le=200)) -> JobList:
    query = select(Job).where(Job.user_id == user.id)
    if status:
        query = query.where(Job.status == status)
    return JobList(data=[public(j) for j in db.scalars(query.order_by(Job.created.desc()).limit(limit))])


@router.get("/{job_id}", response_model=JobPublic, responses=responses(404))
def get_job(job_id: str, user: CurrentUser, db: SessionDep) -> JobPublic:
    return public(own(db, user, job_id))


@router.get("/{job_id}/events", responses={200: {"content": {"text/event-stream": {}},
                                                "description": "Server-sent events"}, **responses(404)})
def job_events(job_id: str, request: Request, user: CurrentUser, db: SessionDep):
    """Events of type ``job`` (status and progress) until the job succeeds or fails, or the caller's
    key is revoked or sign-in ends."""
    job = own(db, user, job_id)
    slot = request.app.state.streams.open(user.id)
    sub = request.app.state.events.subscribe(f"job:{job_id}")
    try:
        db.refresh(job)  # subscribed first, then read: a change in between is in the stream
    except BaseException:
        sub.close()
        slot()
        raise
    db.close()  # a stream lasts: its connection goes back to the pool now
    first = {"type": "job", "job": job.id, "kind": job.kind, "status": job.status, "progress": job.progress}
    return event_stream(request, sub, [first], last=lambda e: e.get("status") in FINAL, slot=slot,
                        allowed=still_allowed(request, lambda db, user: own(db, user, job_id)))

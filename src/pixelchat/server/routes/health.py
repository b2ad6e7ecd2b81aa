from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict:
    """Liveness: no authentication. Answered on the event loop, so busy worker threads (or a database
    pool in use) cannot hold it up."""
    return {"status": "ok"}

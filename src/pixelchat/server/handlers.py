"""What each kind of job does, on the worker thread: thin calls into the Python API (generate, edit,
vary, describe, a conversation turn). Errors a client caused become `APIError`s (400), so the job
fails with a message the route returns as is."""

from __future__ import annotations

from PIL import Image

from pixelchat.server.errors import APIError
from pixelchat.server.jobs import BATCHED, JobQueue, Made
from pixelchat.server.models import Job, SessionRow
from pixelchat.server.quality import self_check


def engine_of(queue: JobQueue):
    """The engine every job of this server runs on (`Settings.model` and `Settings.engine`): loaded in this
    process, or with `Settings.backend` "ray", the Ray Serve deployments serving it."""
    if queue.settings.backend == "ray":
        from pixelchat.server.ray_backend import ray_engine

        return ray_engine(queue.settings)
    from pixelchat.engines import load_engine

    settings = queue.settings
    return load_engine(settings.model, settings.engine, device=settings.device, dtype=settings.dtype,
                       offload=settings.offload, runtime=settings.runtime)


def warm_up(engine) -> None:
    """Prepare a runtime other than eager (export, quantization or compilation: seconds) before the
    first request, by drawing one picture at the default size; eager and other engines need nothing."""
    runtime = getattr(engine, "runtime", "eager")
    if runtime != "eager" and hasattr(engine, "generate"):
        from pixelchat.engines import GenerateRequest

        engine.generate(GenerateRequest("a lake at sunset", n=1, seed=0))


def client_errors(fn):
    """Run ``fn``; the engine's and reader's complaints about the request become 400s."""
    from pixelchat.engines import UnsupportedOperation
    from pixelchat.text.instructions import InstructionError

    try:
        return fn()
    except UnsupportedOperation as e:
        raise APIError(400, str(e), param="negative_prompt", code="unsupported_parameter") from None
    except InstructionError as e:
        raise APIError(400, str(e), param="prompt", code="invalid_prompt") from None
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value") from None


def checked_seed(payload: dict) -> int | None:
    """The job's seed, checked as a generation's is (engines.base): past the largest, a 400 naming it,
    not an overflow deep in the engine."""
    from pixelchat.engines.base import check_seed

    try:
        check_seed(payload.get("seed"))
    except ValueError as e:
        raise APIError(400, str(e), param="seed", code="invalid_value") from None
    return payload.get("seed")


def styled(results, style_name: str | None, palette: list[str] | None = None) -> Made:
    from pixelchat.vision.style import apply_palette, apply_style, get_style

    made = Made()
    for r in results:
        image, record = r.image, dict(r.record)
        if style_name and style_name not in ("natural", "none"):
            image, record["style"] = apply_style(image, get_style(style_name)), style_name
        if palette:
            image, record["palette"] = apply_palette(image, palette), list(palette)
        made.images.append(image)
        made.records.append(record)
    return made


def generate_request(payload: dict):
    from pixelchat.engines import GenerateRequest

    candidates = int(payload.get("candidates", 1))  # the self-check's, per picture (pixelchat.server.quality)
    return GenerateRequest(prompt=payload["prompt"], n=int(payload.get("n", 1)) * candidates, seed=payload.get("seed"),
                           size=payload.get("size"), negative_prompt=payload.get("negative_prompt") or None,
                           **pipeline_settings(payload))


def pipeline_settings(payload: dict) -> dict:
    """The diffusion settings a request set (steps, guidance, scheduler); the unset ones left out."""
    from pixelchat.engines.base import PIPELINE_SETTINGS

    return {k: payload[k] for k in PIPELINE_SETTINGS if payload.get(k) is not None}


def generate_batch(queue: JobQueue, jobs: list[Job]) -> list[Made]:
    engine = engine_of(queue)
    results = client_errors(lambda: engine.generate_batch([generate_request(j.payload) for j in jobs]))
    out = []
    for job, images in zip(jobs, results):
        p = job.payload
        images, runners_up = self_check(engine, p["prompt"], images, int(p.get("candidates", 1)))
        made = styled(images, p.get("style"), p.get("palette"))
        made.result = {"revised_prompt": p["prompt"]}
        publish_partials(queue, p, runners_up)
        out.append(made)
    return out


def publish_partials(queue: JobQueue, payload: dict, runners_up) -> None:
    """A streaming request's partial pictures (the candidates not kept, weakest first) to the topic it
    listens on; they are not stored."""
    if payload.get("partials") and runners_up:
        partial = styled(runners_up, payload.get("style"), payload.get("palette"))
        queue.events.publish(payload["partials"], {"type": "partial", "images": partial.images,
                                                   "records": partial.records})


def upload(queue: JobQueue, job: Job, name: str) -> Image.Image | None:
    if not job.payload.get(name):
        return None
    path = queue.upload_path(job.id, name)
    if not path.exists():
        raise APIError(500, f"the uploaded {name} of this job is gone", param=name, code="upload_lost")
    image = Image.open(path, formats=["PNG"])
    image.load()
    return image


def run(queue: JobQueue, job: Job) -> Made:
    p, model = job.payload, engine_of(queue)
    if job.kind in BATCHED:
        return generate_batch(queue, [job])[0]
    if job.kind == "edit":
        from pixelchat.edit import edit

        picture, mask = upload(queue, job, "image"), upload(queue, job, "mask")
        options = {"strength": p["strength"]} if p.get("strength") is not None else {}
        options.update(p.get("engine_options") or {})
        options.update(pipeline_settings(p))
        if p.get("size"):
            options["size"] = int(p["size"])  # what quality asked for (pixelchat.server.quality)
        n, partials = int(p.get("n", 1)), int(p.get("partial_images", 0))  # runners-up to stream, best last
        result = client_errors(lambda: edit(picture.convert("RGB"), p["prompt"], mask=mask, n=n + partials,
                                            seed=checked_seed(p), model=model, **options))
        publish_partials(queue, p, result.images[n:][::-1])
        made = styled(result.images[:n], None)
        made.result = {"revised_prompt": result.revised_prompt}
        return made
    if job.kind == "vary":
        from pixelchat.edit import vary

        picture = upload(queue, job, "image").convert("RGB")
        sized = {"size": int(p["size"])} if p.get("size") else {}
        results = client_errors(lambda: vary(picture, n=int(p.get("n", 1)), seed=checked_seed(p), model=model,
                                             **(p.get("engine_options") or {}), **pipeline_settings(p), **sized))
        made = styled(results, None)
        made.result = {"revised_prompt": results[0].record.get("prompt", "") if results else ""}
        return made
    if job.kind == "describe":
        from pixelchat.describe import describe

        d = client_errors(lambda: describe(upload(queue, job, "image").convert("RGB"), model=model))
        return Made(result={"caption": d.caption, "prompt": d.prompt, "attributes": d.attributes,
                            "confidence": {k: round(float(v), 4) for k, v in d.confidence.items()}})
    if job.kind == "message":
        return message(queue, job)
    raise APIError(400, f"unknown job kind {job.kind!r}", code="invalid_value")


def message(queue: JobQueue, job: Job) -> Made:
    """One turn of a stored conversation: say something, undo, or go to an earlier turn."""
    from pixelchat.conversation.session import Session

    with queue.sessions() as db:
        row = db.get(SessionRow, job.session_id)
        data = row.data if row is not None else None
    if data is None:
        raise APIError(404, "The session was deleted.", param="session_id", code="not_found")
    session = Session.from_json(data)
    session.model = engine_of(queue)
    session.llm = queue.llm
    action = job.payload.get("action", "say")
    if action == "undo":
        turn = session.undo()
    elif action == "goto":
        turn = client_errors(lambda: session.goto(int(job.payload["node"])))
    else:
        kept = session.draw_anyway
        session.draw_anyway = kept or bool(job.payload.get("anyway"))  # a message's 'anyway': for its turn only
        turn = client_errors(lambda: session.turn(job.payload["text"]))
        session.draw_anyway = kept
    made = Made(session_data=session.to_json())
    for image in turn.images:
        made.images.append(image)
        made.records.append({**image.info.get("pixelchat", {}), "session_node": turn.node.id if turn.node else None})
    made.result = {"turn": turn.to_dict()}  # "declined": nothing drawn, kept aside for a 'draw it anyway'
    return made

"""The Ray Serve backend (`Settings.backend = "ray"`): the engine runs as three Serve applications,
``{ray_app}-generate``, ``{ray_app}-edit`` and ``{ray_app}-describe``, each one autoscaled deployment
(`Generator`, `Editor`, `Describer`) whose replicas load the engine of `Settings.model`.

The FastAPI app, its job queue, moderation and provenance stay in the `pixelchat serve` process
(under uvicorn); only engine work crosses to the cluster, through `RayEngine`, an `Engine` whose
methods call the deployments' handles. A call whose replica dies under it is sent again (Serve
starts a replacement) up to `Settings.ray_retries` times; one that still gets no answer fails its
job with a 503.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from pixelchat.engines.base import GenerateRequest, GeneratedImage, ModelInfo
from pixelchat.server.errors import APIError

log = logging.getLogger("pixelchat.server.ray")
APPS = {"Generator": "generate", "Editor": "edit", "Describer": "describe"}  # deployment → application suffix


# --- the deployments (their replicas run on the cluster) -----------------------------------------

class Replica:
    """What every replica holds: the engine of ``model``, and what it is doing (for operators and tests)."""

    def __init__(self, model: str | None, engine: str | None):
        from pixelchat.engines import load_engine

        self.source = (model, engine)
        self.engine = load_engine(model, engine)
        self.calls = 0  # requests received
        self.busy = 0  # requests received and not yet answered

    @contextmanager
    def working(self):
        self.calls += 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    async def run(self, fn, *args, **kwargs):
        """``fn`` on a thread (the engine's work must not stop the replica's event loop), counted."""
        with self.working():
            return await asyncio.to_thread(fn, *args, **kwargs)

    def info(self) -> ModelInfo:
        return self.engine.info

    def served(self) -> tuple[str | None, str | None]:
        """The ``model`` and ``engine`` settings this replica was started with."""
        return self.source

    def stats(self) -> dict:
        from ray import serve

        return {"replica": serve.get_replica_context().replica_id.unique_id, "calls": self.calls, "busy": self.busy}


class Generator(Replica):
    """Generation, with Serve's dynamic batching: requests arriving together (from any server process)
    are drawn in one `generate_batch` call of at most ``max_batch_size`` images."""

    def __init__(self, model: str | None, engine: str | None, *, max_batch_size: int, batch_wait_timeout_s: float):
        from ray import serve

        super().__init__(model, engine)
        self.max_batch_size = max_batch_size
        self.draw = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                                batch_size_fn=lambda requests: sum(r.n for r in requests))(self._draw)

    def check_inputs(self, request: GenerateRequest) -> None:
        self.engine.check_inputs(request)

    async def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        if request.n > self.max_batch_size:  # more than a batch holds: drawn alone
            return await self.run(self.engine.generate, request)
        with self.working():
            drawn = await self.draw(request)
        if isinstance(drawn, Exception):
            raise drawn
        return drawn

    async def _draw(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage] | Exception]:
        """One batch: each request checked alone (a bad one fails only its caller), the rest drawn at once."""
        out: list = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                self.engine.check_inputs(request)
            except (ValueError, NotImplementedError) as e:
                out[i] = e
        good = [i for i, r in enumerate(out) if r is None]
        if good:
            drawn = await asyncio.to_thread(self.engine.generate_batch, [requests[i] for i in good])
            for i, images in zip(good, drawn):
                out[i] = images
        return out


class Editor(Replica):
    async def edit(self, image, prompt: str, options: dict) -> list[GeneratedImage]:
        return await self.run(self.engine.edit, image, prompt, **options)

    async def vary(self, image, options: dict) -> list[GeneratedImage]:
        return await self.run(self.engine.vary, image, **options)


class Describer(Replica):
    async def describe(self, image):
        return await self.run(self.engine.describe, image)


def deployment_options(settings, name: str) -> dict:
    """Serve's options for deployment ``name``: autoscaling and resources from ``settings``."""
    if settings.ray_min_replicas > settings.ray_max_replicas:
        raise ValueError(f"PIXELCHAT_RAY_MIN_REPLICAS ({settings.ray_min_replicas}) is more than "
                         f"PIXELCHAT_RAY_MAX_REPLICAS ({settings.ray_max_replicas})")
    target = settings.ray_target_ongoing_requests
    # a replica takes twice its target before Serve routes elsewhere; a generator, a whole batch at least
    ongoing = max(math.ceil(2 * target), settings.ray_max_batch_size if name == "Generator" else 1)
    return {
        "name": name,
        "autoscaling_config": {"min_replicas": settings.ray_min_replicas, "max_replicas": settings.ray_max_replicas,
                               "initial_replicas": max(settings.ray_min_replicas, 1),
                               "target_ongoing_requests": target},
        "max_ongoing_requests": ongoing,
        "health_check_period_s": 2,  # a dead replica is noticed (and replaced) in seconds, not Serve's default 10
        "ray_actor_options": {"num_cpus": settings.ray_num_cpus, "num_gpus": settings.ray_num_gpus},
    }


def applications(settings) -> dict:
    """The three Serve applications, by name, bound to ``settings``."""
    from ray import serve

    source = (settings.model, settings.engine)
    bound = {
        "Generator": serve.deployment(Generator, **deployment_options(settings, "Generator")).bind(
            *source, max_batch_size=settings.ray_max_batch_size,
            batch_wait_timeout_s=settings.ray_batch_wait_timeout_s),
        "Editor": serve.deployment(Editor, **deployment_options(settings, "Editor")).bind(*source),
        "Describer": serve.deployment(Describer, **deployment_options(settings, "Describer")).bind(*source),
    }
    return {app_name(settings, name): app for name, app in bound.items()}


def app_name(settings, deployment: str) -> str:
    return f"{settings.ray_app}-{APPS[deployment]}"


# --- the server's side ---------------------------------------------------------------------------

def unavailable(message: str) -> APIError:
    return APIError(503, message, code="engine_unavailable", headers={"Retry-After": "5"})


def settle(send, *, retries: int, timeout_s: float, retryable: tuple[type[BaseException], ...], what: str,
           response=None):
    """The answer to a call to a replica: ``send()`` makes the call (``response``: one already made)
    and returns a response with ``result(timeout_s=...)`` and ``cancel()``. A call whose replica dies
    (``retryable``) is made again, up to ``retries`` times; one still unanswered, or not answered
    within ``timeout_s``, is a 503."""
    for attempt in range(retries + 1):
        if response is None:
            response = send()
        try:
            return response.result(timeout_s=timeout_s)
        except retryable as e:
            log.warning("%s: the replica failed (%s: %s); %s", what, type(e).__name__, e,
                        "sending it again" if attempt < retries else "giving up")
            response = None
        except TimeoutError:
            response.cancel()
            raise unavailable(f"The engine did not answer ({what}) within {timeout_s:g} s; try again later.") from None
    raise unavailable(f"The engine's replicas failed {retries + 1} times ({what}); try again later.")


class RayEngine:
    """The `Engine` protocol over the deployments: each method calls its deployment's handle."""

    def __init__(self, handles: dict, *, retries: int, timeout_s: float):
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import RayServeException, ReplicaUnavailableError

        self.handles, self.retries, self.timeout_s = handles, retries, timeout_s
        self.retryable = (RayActorError, ReplicaUnavailableError)
        self.task_error, self.serve_error = RayTaskError, RayServeException
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="pixelchat-ray")
        self.info: ModelInfo = self.call("Generator", "info")

    def call(self, deployment: str, method: str, *args, response=None):
        """``deployment.method(*args)`` on a replica. The engine's own errors (a bad request) are raised
        here as themselves; the cluster's become 503s."""
        handle = getattr(self.handles[deployment], method)
        try:
            return self.blocking(settle, lambda: handle.remote(*args), retries=self.retries, timeout_s=self.timeout_s,
                                 retryable=self.retryable, what=f"{deployment}.{method}", response=response)
        except self.task_error as e:
            raise e.cause from None
        except self.serve_error as e:
            raise unavailable(f"The engine is unavailable ({deployment}.{method}: {e}); try again later.") from None

    def blocking(self, fn, *args, **kwargs):
        """``fn`` waited for here; from an event loop (a route's `check_inputs`), on a thread, since Serve
        refuses to block a loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        return self.pool.submit(fn, *args, **kwargs).result()

    def check_inputs(self, request: GenerateRequest) -> None:
        self.call("Generator", "check_inputs", request)

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage]]:
        """One call per request, all sent at once: the replicas batch them (with other servers' requests)."""
        generate = self.handles["Generator"].generate
        sent = [generate.remote(r) for r in requests]
        return [self.call("Generator", "generate", r, response=response) for r, response in zip(requests, sent)]

    def edit(self, image, prompt: str, **options) -> list[GeneratedImage]:
        return self.call("Editor", "edit", image, prompt, options)

    def vary(self, image, **options) -> list[GeneratedImage]:
        return self.call("Editor", "vary", image, options)

    def describe(self, image):
        return self.call("Describer", "describe", image)


def deploy(settings) -> dict:
    """Join the cluster (`Settings.ray_address`, else RAY_ADDRESS, else a new local one) and deploy the
    applications that are not running there yet; returns their handles by deployment. Running ones are
    used as they are, so several servers share them; they must serve the same model."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ValueError("the ray backend needs Ray Serve: pip install 'pixelchat[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=settings.ray_address)
    serve.start(proxy_location="Disabled")  # reached through handles only: no HTTP proxy to take a port
    running = serve.status().applications
    apps = applications(settings)
    missing = [name for name in apps if name not in running or running[name].status in ("DEPLOY_FAILED", "DELETING")]
    if missing:
        log.info("deploying %s", ", ".join(missing))
        try:
            serve.run_many([serve.RunTarget(apps[name], name=name, route_prefix=None) for name in missing])
        except RuntimeError as e:  # its replicas could not start: a model missing on the cluster, a bad setting
            raise ValueError(f"the engine deployments did not start: {e}") from None
    handles = {deployment: serve.get_app_handle(app_name(settings, deployment)) for deployment in APPS}
    for deployment, handle in handles.items():
        served = tuple(handle.served.remote().result(timeout_s=settings.ray_timeout_s))
        if served != (settings.model, settings.engine):
            raise ValueError(f"the Serve application {app_name(settings, deployment)!r} serves model {served[0]!r} "
                             f"(engine {served[1]!r}), not {settings.model!r}: delete it (`serve shutdown`) or "
                             f"choose another PIXELCHAT_RAY_APP")
    return handles


_engines: dict[tuple, RayEngine] = {}
_lock = threading.Lock()


def ray_engine(settings) -> RayEngine:
    """The `RayEngine` of ``settings`` (deployed on first use, then shared by every caller)."""
    key = (settings.ray_address, settings.ray_app, settings.model, settings.engine)
    with _lock:
        if key not in _engines:
            _engines[key] = RayEngine(deploy(settings), retries=settings.ray_retries, timeout_s=settings.ray_timeout_s)
        return _engines[key]

"""The server's settings: one typed object, read from `PIXELCHAT_*` environment variables and `.env`."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "pixelchat"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIXELCHAT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Database, images and the secret key live here.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    model: str | None = Field(None, description="The checkpoint served (or a diffusers pipeline: a folder or a hub id); "
                                                "default: the shipped model.")
    engine: Literal["gan", "diffusers"] | None = Field(
        None, description="The engine serving `model`; default: diffusers for a pipeline folder, else gan.")
    device: str | None = Field(None, description="Where a diffusers pipeline runs: cuda, cuda:N, mps or cpu; default: "
                                                 "cuda when a GPU is visible, else cpu.")
    dtype: Literal["fp16", "bf16", "fp32"] | None = Field(None, description="A pipeline's number format; default: fp16 "
                                                                            "on a GPU, fp32 on the CPU.")
    offload: bool = Field(False, description="Model CPU offload for a pipeline on CUDA (needs accelerate).")
    runtime: str | None = Field(None, description="What runs the built-in networks: eager, compile, onnx, openvino or "
                                                  "int8 (pixelchat.engines.runtime); default: eager, and for `pixelchat "
                                                  "serve` int8 where the onnx extra is installed.")
    model_aliases: str = Field("dall-e-2,dall-e-3,gpt-image-1,gpt-image-1-mini,gpt-image-1.5",
                               description="Model names the OpenAI-compatible API also answers to with the served "
                                           "model (listed by GET /v1/models), comma-separated; blank: none.")
    secret_key: str | None = Field(None, description="Signs image URLs; default: generated once into data_dir.")
    url_ttl_s: int = Field(3600, ge=10, description="How long a signed image URL stays valid.")
    public_url: str | None = Field(None, description="Base URL in returned image links (set it whenever the server "
                                                     "is reached other than on loopback); default: the request's, "
                                                     "from its Host header.")
    max_upload_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    queue_size: int = Field(64, ge=1, description="Jobs that may wait for the engine; more get 503 at once.")
    workers: int = Field(1, ge=1, le=8, description="Worker threads running jobs (each uses the engine in turn).")
    batch_images: int = Field(32, ge=1, le=64, description="Dynamic batching: most images drawn in one engine call.")
    batch_wait_ms: float = Field(4.0, ge=0, le=1000,
                                 description="Dynamic batching: how long a batch waits for more compatible requests.")
    job_lease_s: float = Field(30.0, gt=0, le=3600,
                               description="A server process's claim on its jobs lasts this long unless renewed (every "
                                           "third of it); the jobs of a process that died pass to another after it.")
    rate_limit_per_minute: int = Field(600, ge=0, description="Requests per minute per user, all their keys and "
                                                              "logins together (0: no limit).")
    rate_limit_burst: int = Field(120, ge=1, description="Requests a user may make at once before the rate applies.")
    queue_per_user: int = Field(16, ge=1, description="Jobs one user may have waiting; more get 429, so one user "
                                                      "cannot fill the queue.")
    auth_cache_s: float = Field(5.0, ge=0, le=300, description="How long the server remembers which user an API key "
                                "signs in (0: looked up on every request). A key revoked or a user deleted through "
                                "this server is forgotten at once; through another process, within this time.")
    keys_per_user: int = Field(20, ge=1, description="API keys (not revoked) a user may hold.")
    login_attempts_per_minute: int = Field(6, ge=0, description="Sign-in attempts per minute per account name and "
                                                                "per client address (0: no limit).")
    login_attempts_burst: int = Field(10, ge=1, description="Sign-in attempts an account name or client address "
                                                            "may make at once before the rate applies.")
    login_concurrency: int = Field(2, ge=1, le=64, description="Password checks run at once (each takes 64 MiB "
                                                               "and a CPU core for a moment); the rest wait.")
    streams_per_user: int = Field(8, ge=1, description="Live event streams one user may hold open; more get 429.")
    streams_total: int = Field(512, ge=1, description="Live event streams the server holds open; more get 429.")
    upload_decodes: int = Field(2, ge=1, le=64, description="Uploaded pictures decoded at once; the rest wait.")
    docs: bool | None = Field(None, description="Serve the API browser at /docs and /redoc (their scripts come "
                                                "from a CDN); default: only to clients on a loopback address.")
    login_ttl_s: int = Field(14 * 24 * 3600, ge=60, description="How long a browser stays signed in.")
    cookie_secure: bool = Field(False, description="Send the login cookie over HTTPS only (set behind TLS).")
    policy: Path | None = Field(None, description="A content policy file (JSON); default: the shipped one.")
    moderation_allow: str = Field("", description="Policy categories the operator allows, comma-separated "
                                                  "(sexual_minors can never be allowed).")
    log_prompts: bool = Field(False, description="Put the prompt's text in the moderation decision log.")
    output_checkers: str = Field("", description="Checkers run on every picture before it is returned or stored, "
                                                 "comma-separated (blank, prompt, nudenet).")
    store_url: str | None = Field(None, description="Where pictures are kept: a folder or an fsspec URL "
                                                    "(s3://bucket/prefix needs the s3 extra); default: data_dir/images.")
    backend: Literal["local", "ray"] = Field("local", description="Where the engine runs: in this process, or as "
                                                                  "Ray Serve deployments (the ray extra).")
    ray_address: str | None = Field(None, description="The Ray cluster to join; default: RAY_ADDRESS, else a local one.")
    ray_app: str = Field("pixelchat", description="The Serve application holding the engine deployments.")
    ray_min_replicas: int = Field(1, ge=0, description="Autoscaling: fewest replicas of each deployment.")
    ray_max_replicas: int = Field(4, ge=1, description="Autoscaling: most replicas of each deployment.")
    ray_target_ongoing_requests: float = Field(2.0, gt=0, description="Autoscaling: requests per replica aimed at.")
    ray_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved by each replica.")
    ray_num_gpus: float = Field(0.0, ge=0, description="GPUs reserved by each replica.")
    ray_max_batch_size: int = Field(32, ge=1, le=64, description="Most images a generation replica draws in one call.")
    ray_batch_wait_timeout_s: float = Field(0.01, ge=0, le=600,
                                            description="How long a generation replica waits to fill a batch.")
    ray_retries: int = Field(2, ge=0, le=10, description="Times a call is sent again when its replica died.")
    ray_timeout_s: float = Field(600.0, gt=0, description="Longest wait for one call to a replica.")

    def moderation(self):
        """The moderation settings these make (`pixelchat.safety.moderation.ModerationSettings`)."""
        from pixelchat.safety.moderation import ModerationSettings

        split = lambda value: tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))  # noqa: E731
        return ModerationSettings(policy=str(self.policy) if self.policy else None, allow=split(self.moderation_allow),
                                  log_prompts=self.log_prompts, output_checkers=split(self.output_checkers))

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pixelchat.db'}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def uploads_dir(self) -> Path:
        """Uploaded pictures of jobs that have not finished (``JOB_ID-NAME.png``)."""
        return self.data_dir / "uploads"

    def signing_key(self) -> bytes:
        """The configured secret, or one made once and kept in the data folder (owner-only)."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))
        return path.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()

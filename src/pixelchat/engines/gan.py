"""The built-in engine: a trained generator from a safetensors checkpoint, one forward pass per batch."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelchat import __version__
from pixelchat.engines.base import (
    MAX_IMAGES, MAX_PROMPT_CHARS, GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation,
)
from pixelchat.models import ModelConfig, build_generator
from pixelchat.training.checkpoint import CheckpointError, load_checkpoint, load_module

MAX_SEED = 2**63 - 1


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator, truncation: float | None) -> torch.Tensor:
    """N(0, 1) samples, redrawn where |z| > truncation (the truncation trick, Brock et al. 2019, sec. 3.1)."""
    z = torch.randn(shape, generator=generator)
    if truncation is not None:
        for _ in range(1000):
            out = z.abs() > truncation
            if not out.any():
                break
            z[out] = torch.randn(int(out.sum()), generator=generator)
    return z


def latent_for_seed(seed: int, z_dim: int, truncation: float | None = None) -> torch.Tensor:
    return truncated_normal((z_dim,), torch.Generator().manual_seed(seed), truncation)


def encode_latent(z: torch.Tensor) -> str:
    return base64.b64encode(z.to(torch.float32).numpy().astype("<f4").tobytes()).decode()


def decode_latent(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype="<f4").copy())


class GANEngine:
    """Serves a generator checkpoint written by the training loop (``model.safetensors`` + JSON)."""

    def __init__(self, path: str | Path, *, encoder=None):
        ckpt = load_checkpoint(path)
        config = ckpt.config
        try:
            self.model_cfg = ModelConfig.from_dict(config["model"])
            enc = config["text_encoder"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {ckpt.path} has an invalid config: {e}") from e
        self.generator = build_generator(self.model_cfg).eval()
        load_module(self.generator, ckpt, "G_ema")
        self.generator = self.generator.to(memory_format=torch.channels_last)
        self.generator.requires_grad_(False)
        if encoder is None:
            from pixelchat.text.encoder import load_text_encoder

            encoder = load_text_encoder(enc["name"])
        if encoder.dim != self.model_cfg.text_dim or (enc.get("sha256") and encoder.weights_sha256 != enc["sha256"]):
            raise CheckpointError(
                f"checkpoint {ckpt.path} was trained with text encoder {enc['name']!r} (sha256 {enc.get('sha256', '?')[:12]}), "
                f"but the loaded encoder {encoder.name!r} differs (sha256 {encoder.weights_sha256[:12]}); "
                "install the same encoder weights or retrain")
        self.encoder = encoder
        self.info = ModelInfo(id=config.get("name") or ckpt.path.stem, sha256=ckpt.sha256, engine="gan",
                              arch=self.model_cfg.arch, size=self.model_cfg.size, text_encoder=enc["name"],
                              path=str(ckpt.path))

    # 1. check inputs
    def check_inputs(self, request: GenerateRequest) -> None:
        prompt = request.prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
        if not 1 <= request.n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {request.n}")
        if request.size is not None and request.size != self.model_cfg.size:
            raise ValueError(f"model {self.info.id} draws {self.model_cfg.size}×{self.model_cfg.size} images; "
                             f"size {request.size} is not supported")
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_IMAGES:
            raise ValueError(f"seed must be between 0 and {MAX_SEED - MAX_IMAGES}")
        if request.truncation is not None and not 0.05 <= request.truncation <= 10:
            raise ValueError(f"truncation must be between 0.05 and 10, got {request.truncation}")
        if request.negative_prompt:
            raise UnsupportedOperation("negative prompts are not supported by the built-in engine yet")

    # 2. encode prompt
    def encode_prompt(self, prompt: str, n: int) -> torch.Tensor:
        return self.encoder.embed([prompt.strip()]).expand(n, -1)  # (n, D)

    # 3. prepare latents
    def prepare_latents(self, seeds: list[int], truncation: float | None) -> torch.Tensor:
        return torch.stack([latent_for_seed(s, self.model_cfg.z_dim, truncation) for s in seeds])  # (n, z_dim)

    # 4. run the generator
    @torch.inference_mode()
    def decode(self, z: torch.Tensor, text: torch.Tensor) -> list[Image.Image]:
        x = self.generator(z, text)  # (n, 3, H, W) in [-1, 1]
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        return [Image.fromarray(a) for a in x]

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        self.check_inputs(request)
        base = request.seed if request.seed is not None else secrets.randbelow(2**32)
        seeds = [base + i for i in range(request.n)]
        text = self.encode_prompt(request.prompt, request.n)
        z = self.prepare_latents(seeds, request.truncation)
        images = self.decode(z, text)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return [GeneratedImage(img, request.prompt, s, self.record(request, s, zi, created))
                for img, s, zi in zip(images, seeds, z)]

    def record(self, request: GenerateRequest, seed: int, z: torch.Tensor, created: str) -> dict:
        """Everything needed to say how the image was made, and to make it again."""
        return {
            "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": seed,
            "truncation": request.truncation, "latent": encode_latent(z),
            "size": [self.model_cfg.size, self.model_cfg.size],
            "model": {"id": self.info.id, "sha256": self.info.sha256, "arch": self.info.arch,
                      "text_encoder": self.info.text_encoder},
            "engine": self.info.engine, "pixelchat_version": __version__, "created": created,
        }

    def edit(self, image: Image.Image, prompt: str, **options) -> list[GeneratedImage]:
        raise UnsupportedOperation("editing images is not available yet")

    def describe(self, image: Image.Image) -> dict:
        raise UnsupportedOperation("describing images is not available yet")

    def vary(self, image: Image.Image, **options) -> list[GeneratedImage]:
        raise UnsupportedOperation("variations of an image are not available yet")

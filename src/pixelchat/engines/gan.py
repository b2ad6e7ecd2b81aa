"""The built-in engine: a trained generator from a safetensors checkpoint, one forward pass per batch."""

from __future__ import annotations

import base64
import math
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelchat.engines.base import (
    MAX_IMAGES, GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation, check_prompt, check_seed,
)
from pixelchat.training.checkpoint import CheckpointError, load_generator



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


# prompts whose conditions the int8 runtime of a text-conditioned model is calibrated on
CALIBRATION_SUBJECTS = ("mountains", "hills", "a desert", "a plain", "a lake", "the sea", "a forest", "a house")
CALIBRATION_SETTINGS = ("at night", "at sunset", "by day", "with clouds")


class GANEngine:
    """Serves a generator checkpoint written by the training loop (``model.safetensors`` + JSON)."""

    checks_pictures = False  # does generate check its pictures against the prompt (GenerateRequest.attempts)?

    def __init__(self, path: str | Path, *, encoder=None, describer=None, inverter: str | Path | None = None,
                 upsampler: str | Path | bool | None = None, runtime: str | None = None):
        self.use_runtime(runtime)
        self.generator, self.model_cfg, ckpt = load_generator(path)
        config = ckpt.config
        enc = config.get("text_encoder")
        if not isinstance(enc, dict) or "name" not in enc:
            raise CheckpointError(f"checkpoint {ckpt.path} names no text encoder (a spec-conditioned model is "
                                  "served by pixelchat.engines.spec.SpecEngine)")
        if encoder is None:
            from pixelchat.text.encoder import load_text_encoder

            encoder = load_text_encoder(enc["name"])
        if encoder.dim != self.model_cfg.text_dim or (enc.get("sha256") and encoder.weights_sha256 != enc["sha256"]):
            raise CheckpointError(
                f"checkpoint {ckpt.path} was trained with text encoder {enc['name']!r} (sha256 {enc.get('sha256', '?')[:12]}), "
                f"but the loaded encoder {encoder.name!r} differs (sha256 {encoder.weights_sha256[:12]}); "
                "install the same encoder weights or retrain")
        self.encoder = encoder
        self._describer = describer  # a Describer, a checkpoint path, or None for the shipped one
        self._describer_is_default, self._checker = describer is None, None
        self._inverter_path = inverter
        self._inverter = None
        self.info = ModelInfo(id=config.get("name") or ckpt.path.stem, sha256=ckpt.sha256, engine="gan",
                              arch=self.model_cfg.arch, size=self.model_cfg.size, text_encoder=enc["name"],
                              path=str(ckpt.path))
        self.attach_upsampler(config, upsampler)

    # --- the runtime that runs the networks (pixelchat.engines.runtime) ---------------------------

    def use_runtime(self, runtime: str | None) -> None:
        """Run the generator and the upsampler with ``runtime`` (None: ``PIXELCHAT_RUNTIME`` or eager)."""
        from pixelchat.engines.runtime import check_available, runtime_name

        self.runtime = runtime_name(runtime)
        check_available(self.runtime)
        self._prepared: dict[str, object] = {}
        self._heads: dict[str, torch.nn.Module] = {}  # the attribute readers as networks, for the runtimes
        self._prepare_lock = threading.Lock()

    def _run(self, name: str, module: torch.nn.Module, key, *inputs: torch.Tensor, calibration=None,
             runtime: str | None = None) -> torch.Tensor:
        """``module(*inputs)`` by the engine's runtime, or by ``runtime`` (prepared, and for exported runtimes
        cached, on first use). ``key``: the name of the network's weights in the export cache, or a callable
        giving it. ``calibration``: the callable giving the inputs an int8 network is calibrated on (None: it
        stays eager)."""
        runtime = runtime or self.runtime
        if runtime == "eager":
            return module(*inputs)
        fn = self._prepared.get(name)
        if fn is None:
            from pixelchat.engines.runtime import prepare

            with self._prepare_lock:
                fn = self._prepared.get(name)
                if fn is None:
                    example = tuple(t[:1].expand(2, *t.shape[1:]).contiguous() for t in inputs)
                    fn = self._prepared[name] = prepare(runtime, module, example, key() if callable(key) else key,
                                                        calibration)
        return fn(*inputs)

    def attribute_probabilities(self, images: torch.Tensor, reader: str = "describer") -> dict[str, torch.Tensor]:
        """Per-attribute probabilities, (B, values) each, for pictures (B, 3, H, W) in [-1, 1] or uint8, read by
        the describer or, with ``reader="checker"``, by the self-check's reader (`checker`); run by the engine's
        runtime, under int8 by ONNX Runtime in fp32, so that the checks read in full precision."""
        from pixelchat.vision.describer import AttributeHeads, attribute_probabilities, weights_key

        network = self.checker if reader == "checker" else self.describer
        if self.runtime == "eager":
            return attribute_probabilities(network, images)
        heads = self._heads.get(reader)
        if heads is None or heads.describer is not network:
            heads = self._heads[reader] = AttributeHeads(network).eval()
        runtime = "onnx" if self.runtime == "int8" else self.runtime
        return attribute_probabilities(network, images, lambda x: self._run(
            reader, heads, lambda: f"{reader}-{weights_key(network)}", x, runtime=runtime))

    def draw(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The generator's forward pass (B, 3, n, n) in [-1, 1], by the engine's runtime."""
        return self._run("generator", self.generator, f"{self.info.sha256[:16]}-generator", z, cond,
                         calibration=self.calibration_inputs)

    CALIBRATION_SEEDS = range(1_000_000, 1_000_128)  # the int8 runtime's calibration: fixed, so every start agrees

    def calibration_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The generator's inputs (latent, condition), one row each, that the int8 runtime measures its
        ranges on: latents of fixed seeds with the conditions of varied prompts."""
        prompts = [f"{a} {b}" for a in CALIBRATION_SUBJECTS for b in CALIBRATION_SETTINGS]
        seeds = list(self.CALIBRATION_SEEDS)
        cond = self.encoder.embed([prompts[i % len(prompts)] for i in range(len(seeds))])
        return [(z[None], c[None]) for z, c in zip(self.prepare_latents(seeds, None), cond)]

    # --- sizes: the generator's own, and the larger ones its upsampler draws ----------------------

    def attach_upsampler(self, config: dict, upsampler: str | Path | bool | None) -> None:
        """Find the upsampler behind the larger sizes: ``upsampler`` (a checkpoint; False: none), or by
        default the shipped one where the model was trained on scenes at the upsampler's input size.
        Only its JSON is read here; the weights load on first use."""
        from pixelchat.models.upsampler import DEFAULT_UPSAMPLER, read_upsampler_config

        self._upsampler, self._upsampler_path = None, None
        self._upsampler_lock = threading.Lock()
        native = self.model_cfg.size
        if upsampler is False:
            path = None
        elif upsampler not in (None, True):
            path = Path(upsampler)
        else:
            scenes = (config.get("training") or {}).get("data") == "scenes"
            present = DEFAULT_UPSAMPLER.with_suffix(".json").is_file()
            path = DEFAULT_UPSAMPLER if scenes and present else None
            if path is not None and read_upsampler_config(path)[0].in_size != native:
                path = None
        sizes, meta = (native,), None
        if path is not None:
            cfg, sha, name = read_upsampler_config(path)
            if cfg.in_size != native:
                raise CheckpointError(f"upsampler {path} takes {cfg.in_size} px pictures; model {self.info.id} "
                                      f"draws {native} px")
            sizes, meta = (native, *cfg.sizes), {"id": name, "sha256": sha}
            self._upsampler_path = path
        self.info = replace(self.info, sizes=sizes, upsampler=meta)

    @property
    def upsampler(self):
        """The upsampler network (loaded on first use), or None where the model has none."""
        if self._upsampler is None and self._upsampler_path is not None:
            with self._upsampler_lock:
                if self._upsampler is None:
                    from pixelchat.models.upsampler import load_upsampler, read_upsampler_config

                    net = load_upsampler(self._upsampler_path)  # checks the weights against the JSON's sha256
                    if read_upsampler_config(self._upsampler_path)[1] != self.info.upsampler["sha256"]:
                        raise CheckpointError(f"upsampler {self._upsampler_path} changed since the model was loaded")
                    self._upsampler = net
        return self._upsampler

    def check_size(self, size: int | None) -> int:
        """The side a request gets: ``size``, which must be one the model draws, or the default."""
        sizes = self.info.sizes or (self.model_cfg.size,)
        if size is None:
            return self.info.default_size
        if isinstance(size, bool) or not isinstance(size, int) or size not in sizes:
            raise ValueError(f"model {self.info.id} draws {', '.join(f'{s}×{s}' for s in sizes)} pictures; "
                             f"size {size!r} is not one of them")
        return size

    @torch.inference_mode()
    def upscale(self, x: torch.Tensor, size: int, chunk: int = 16) -> torch.Tensor:
        """(B, 3, n, n) in [-1, 1] at the model's size → (B, 3, size, size), by the upsampler."""
        native = self.model_cfg.size
        if size == native:
            return x
        from pixelchat.engines.runtime import Scaled

        net, scale = self.upsampler, size // native
        module = self._prepared.get(f"up{scale}-module") or self._prepared.setdefault(f"up{scale}-module", Scaled(net, scale))
        key = f"{self.info.upsampler['sha256'][:16]}-upsampler-x{scale}"
        x = x.float().contiguous(memory_format=torch.channels_last)
        return torch.cat([self._run(f"up{scale}", module, key, x[i:i + chunk], calibration=self.upsampler_calibration)
                          for i in range(0, len(x), chunk)])

    def upsampler_calibration(self) -> list[tuple[torch.Tensor]]:
        """The upsampler's int8 calibration rows: the generator's own pictures (eager) of its calibration inputs."""
        rows = self.calibration_inputs()
        with torch.inference_mode():
            x = self.generator(torch.cat([z for z, _ in rows]), torch.cat([c for _, c in rows]))
        return [(p[None].contiguous(),) for p in x]

    def pictures(self, x: torch.Tensor, sizes: list[int] | int) -> list[Image.Image]:
        """Generator outputs (B, 3, n, n) → pictures, picture i at ``sizes[i]`` (or all at one size)."""
        sizes = [sizes] * len(x) if isinstance(sizes, int) else sizes
        out: list[Image.Image | None] = [None] * len(x)
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            for i, picture in zip(idx, self.to_pil(self.upscale(x[idx], size))):
                out[i] = picture
        return out

    def output_size(self, image: Image.Image, size: int | None) -> int:
        """The side an edit or variation of ``image`` comes back at: ``size``, else the picture's own side
        where the model draws it, else the default."""
        if size is not None:
            return self.check_size(size)
        w, h = image.size
        return w if w == h and w in (self.info.sizes or (self.model_cfg.size,)) else self.info.default_size

    def at_size(self, x: torch.Tensor, size: int, image: Image.Image, mask=None,
                changed: torch.Tensor | None = None) -> torch.Tensor:
        """Edited pictures (B, 3, n, n), already blended with the picture at the model's size → at ``size``:
        upscaled, then the picture's own pixels at full resolution wherever the user's ``mask`` is 0 (or,
        for an inverted picture, where ``changed`` — (B or 1, 1, n, n) in [0, 1] — says it did not change)."""
        if size == self.model_cfg.size:
            return x
        import torch.nn.functional as F

        from pixelchat.vision.editing import blend, feather, mask_tensor

        up = self.upscale(x, size)
        if mask is not None:
            m = mask_tensor(mask, size)
            m = feather(m, size / self.model_cfg.size) * (m > 0)  # soft inside the edge, exact outside the mask
        elif changed is not None:
            m = F.interpolate(changed.float(), size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        else:
            return up
        return blend(up, self.image_tensor(image, size), m)

    @staticmethod
    def check_mask(mask, image: Image.Image, size: int) -> None:
        """A mask must be at the picture's size or at the output's."""
        if mask is None:
            return
        h, w = np.shape(mask)[:2]
        if (w, h) != image.size and (w, h) != (size, size):
            raise ValueError(f"the mask is {w}×{h}; it must match the picture ({image.width}×{image.height}) "
                             f"or the output ({size}×{size})")

    # 1. check inputs
    def check_inputs(self, request: GenerateRequest) -> None:
        check_prompt(request.prompt)
        if not 1 <= request.n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {request.n}")
        self.check_size(request.size)
        check_seed(request.seed)
        if request.truncation is not None and not 0.05 <= request.truncation <= 10:
            raise ValueError(f"truncation must be between 0.05 and 10, got {request.truncation}")
        if request.negative_prompt:
            raise UnsupportedOperation("negative prompts are not supported by the built-in engine yet")
        if request.attempts is not None and not self.checks_pictures:
            raise UnsupportedOperation("attempts is an option of spec models (the describer checks their pictures "
                                       "against the prompt's scene spec); this text-conditioned model has none")

    # 2. encode prompt
    def encode_prompt(self, prompt: str, n: int) -> torch.Tensor:
        return self.encoder.embed([prompt.strip()]).expand(n, -1)  # (n, D)

    # 3. prepare latents
    def prepare_latents(self, seeds: list[int], truncation: float | None) -> torch.Tensor:
        return torch.stack([latent_for_seed(s, self.model_cfg.z_dim, truncation) for s in seeds])  # (n, z_dim)

    # 4. run the generator
    @torch.inference_mode()
    def decode(self, z: torch.Tensor, text: torch.Tensor, sizes: list[int] | int | None = None) -> list[Image.Image]:
        """(n, 3, H, W) in [-1, 1] → pictures, at ``sizes`` (default: the model's own)."""
        return self.pictures(self.draw(z, text), self.model_cfg.size if sizes is None else sizes)

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        self.check_inputs(request)
        base = request.seed if request.seed is not None else secrets.randbelow(2**32)
        seeds = [base + i for i in range(request.n)]
        text = self.encode_prompt(request.prompt, request.n)
        z = self.prepare_latents(seeds, request.truncation)
        images = self.decode(z, text, self.check_size(request.size))
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return [GeneratedImage(img, request.prompt, s, self.record(request, s, zi, created))
                for img, s, zi in zip(images, seeds, z)]

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage]]:
        """Several requests in one forward pass (dynamic batching): the same pictures as one
        `generate` call each, at the cost of one. Every request is checked before any is drawn."""
        seeds = self.batch_seeds(requests)
        prompts = [r.prompt for r in requests for _ in range(r.n)]
        text = self.encoder.embed([p.strip() for p in prompts])
        z = torch.cat([self.prepare_latents(s, r.truncation) for s, r in zip(seeds, requests)])
        images = self.decode(z, text, [self.check_size(r.size) for r in requests for _ in range(r.n)])
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out, i = [], 0
        for r, ss in zip(requests, seeds):
            out.append([GeneratedImage(images[i + j], r.prompt, s, self.record(r, s, z[i + j], created))
                        for j, s in enumerate(ss)])
            i += r.n
        return out

    def batch_seeds(self, requests: list[GenerateRequest]) -> list[list[int]]:
        """Every request checked (before any is drawn), then each picture's seed: request seed + i, or a
        random one."""
        for request in requests:
            self.check_inputs(request)
        if sum(r.n for r in requests) > MAX_IMAGES:
            raise ValueError(f"a batch draws at most {MAX_IMAGES} images")
        return [[(r.seed if r.seed is not None else secrets.randbelow(2**32)) + i for i in range(r.n)]
                for r in requests]

    def record(self, request: GenerateRequest, seed: int, z: torch.Tensor, created: str) -> dict:
        """Everything needed to say how the image was made, and to make it again."""
        size = self.check_size(request.size)
        out = {
            "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": seed,
            "truncation": request.truncation, "latent": encode_latent(z),
            "size": [size, size], **self.info.made_by(created), "runtime": self.runtime,
        }
        if size != self.model_cfg.size:  # the networks that made it: the generator, then the upsampler
            out["upsampler"] = {**self.info.upsampler, "from": self.model_cfg.size, "scale": size // self.model_cfg.size}
        return out

    # --- describe, edit, vary -------------------------------------------------------------

    @property
    def describer(self):
        """The captioner behind `describe` and the re-ranking of edits (loaded on first use)."""
        if self._describer is None or isinstance(self._describer, (str, Path)):
            from pixelchat.vision.describer import load_describer

            with torch.inference_mode(False):  # its weights must also serve latent refinement
                self._describer = load_describer(self._describer)
        return self._describer

    @property
    def checker(self):
        """What reads new pictures back for the self-check: the shipped checker (`pixelchat.vision.describer.
        DEFAULT_CHECKER`: a describer of a quarter the cost, whose attribute heads alone are used) while this
        engine reads with the shipped describer and the checker reads the scenes attributes (all the check asks
        about); else the describer. Choosing the checker does not load the describer."""
        if self._checker is None:
            from pixelchat.data.spec import is_scenes
            from pixelchat.vision.describer import DEFAULT_CHECKER, load_describer

            checker = None
            if self._describer_is_default and DEFAULT_CHECKER.is_file():
                with torch.inference_mode(False):
                    checker = load_describer(DEFAULT_CHECKER, familiarity=False)
                if not is_scenes(checker.cfg.schema):
                    checker = None
            self._checker = checker or self.describer
        return self._checker

    @property
    def inverter(self):
        """The inversion encoder trained for this generator, or None (optimisation from random starts)."""
        if self._inverter is None:
            from pixelchat.vision.inversion import DEFAULT_INVERTER, load_inverter

            path = self._inverter_path or DEFAULT_INVERTER
            self._inverter = False
            if Path(path).with_suffix(".safetensors").exists():
                with torch.inference_mode(False):
                    inv = load_inverter(path)
                if inv.cfg.generator_sha256 == self.info.sha256:
                    self._inverter = inv
                elif self._inverter_path:
                    raise CheckpointError(f"inverter {path} was trained for another generator "
                                          f"(sha256 {inv.cfg.generator_sha256[:12]}), not {self.info.id}")
        return self._inverter or None

    def image_tensor(self, image: Image.Image, size: int | None = None) -> torch.Tensor:
        """A picture → (1, 3, size, size) in [-1, 1]: centre-cropped and resized (default: the model's size)."""
        from pixelchat.data.dataset import pil_to_uint8, to_square_rgb

        return pil_to_uint8(to_square_rgb(image, size or self.model_cfg.size))[None].float() / 127.5 - 1

    def describe(self, image: Image.Image):
        """What the picture shows: caption, attributes with confidences, and a prompt to redraw it."""
        from pixelchat.vision.describer import describe_images, image_to_tensor

        return describe_images(self.describer, image_to_tensor(image))[0]

    def source(self, image: Image.Image, source_prompt: str | None = None) -> Source:
        """The latent and prompt a picture comes from: its own record when this model drew it,
        otherwise an inversion under ``source_prompt`` (default: the description's prompt)."""
        from pixelchat.imagefiles import read_record

        record = read_record(image)
        latent = self._record_latent(record)
        if latent is not None:
            prompt = source_prompt or record.get("prompt") or ""
            return Source(latent[None], prompt, self.encode_prompt(prompt, 1), "record", None)
        if self.model_cfg.arch != "textgan":
            raise UnsupportedOperation("only the text GAN's pictures can be inverted; this picture has no latent "
                                       "from this model")
        from pixelchat.vision.inversion import invert

        prompt = source_prompt or self.describe(image).prompt
        text = self.encode_prompt(prompt, 1)
        inv = invert(self.generator, self.image_tensor(image), text, inverter=self.inverter)
        return Source(inv.z, prompt, text, "inversion", inv)

    def _record_latent(self, record: dict | None) -> torch.Tensor | None:
        if not record or record.get("model", {}).get("sha256") != self.info.sha256 or not record.get("latent"):
            return None
        try:
            z = decode_latent(record["latent"])
        except (ValueError, TypeError):
            return None
        return z if z.shape == (self.model_cfg.z_dim,) and torch.isfinite(z).all() else None

    @torch.inference_mode()
    def redraw(self, z: torch.Tensor, text: torch.Tensor, fine_text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, size, size) in [-1, 1]; ``fine_text`` mixes texts (coarse blocks: ``text``)."""
        if fine_text is None:
            return self.draw(z, text)
        return self.generator(z, text, fine_text)

    def edit(self, image: Image.Image, prompt: str, *, mask=None, strength: float = 0.35, n: int = 1,
             seed: int | None = None, target: dict[str, str] | None = None, source_prompt: str | None = None,
             candidates: int = 24, mix: str = "auto", keep: str = "auto", refine_steps: int = 30,
             size: int | None = None, **options) -> list[GeneratedImage]:
        """Redraw ``image`` under ``prompt``, keeping what the prompt does not change.

        mask: an (H, W) array in [0, 1] at the image's size, 1 where the picture may change.
        strength: how far candidates may move from the picture's latent (0: not at all, 1: anywhere).
        target: the attributes the result should show (default: those ``prompt`` names); candidates
        are ranked by the describer's agreement with them. mix: "auto" (coarse/fine text mixing when
        only details change), "on" or "off". keep: "auto" (an inverted picture keeps its own pixels
        outside the region the text change touches) or "off". refine_steps: Adam steps moving the
        chosen latents towards what the describer should read (0: re-ranking only). size: the side of
        the result (default: the picture's own where the model draws it); the picture is edited at the
        model's size and upscaled, and keeps its own full-resolution pixels outside the mask."""
        if options:
            raise UnsupportedOperation(f"unknown edit option(s): {', '.join(sorted(options))}")
        self.check_inputs(GenerateRequest(prompt=prompt, n=n, seed=seed))
        if mix not in ("auto", "on", "off") or keep not in ("auto", "off"):
            raise ValueError("mix must be auto, on or off; keep must be auto or off")
        if not 1 <= candidates <= 256:
            raise ValueError(f"candidates must be between 1 and 256, got {candidates}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        if refine_steps < 0 or refine_steps > 1000:
            raise ValueError(f"refine_steps must be between 0 and 1000, got {refine_steps}")
        out_size = self.output_size(image, size)
        self.check_mask(mask, image, out_size)
        from pixelchat.text.instructions import read_attributes
        from pixelchat.vision.editing import (
            DETAIL_ATTRIBUTES, blend, candidate_latents, change_mask, feather, guided_refine, mask_tensor,
        )

        native = self.model_cfg.size
        src = self.source(image, source_prompt)
        x0 = self.image_tensor(image)
        text = self.encode_prompt(prompt, 1)
        target = dict(target) if target is not None else read_attributes(prompt)
        base = seed if seed is not None else secrets.randbelow(2**32)
        k = max(candidates, n)
        zs = candidate_latents(src.z[0], strength, k, torch.Generator().manual_seed(base))
        mixed = self.model_cfg.arch == "textgan" and mix == "on"
        if self.model_cfg.arch == "textgan" and mix == "auto" and target:  # only details change: mix
            now = self.describe(image).attributes if src.how == "record" else read_attributes(src.prompt)
            changed = {a for a, v in target.items() if now.get(a) != v}
            mixed = bool(changed) and changed <= DETAIL_ATTRIBUTES
        coarse = src.text if mixed else text  # coarse/fine mixing: the layout keeps the old prompt
        fine = text if mixed else None
        user_mask = None if mask is None else feather(mask_tensor(mask, native), 1.0)
        auto_keep = user_mask is None and src.how == "inversion" and keep == "auto"
        with torch.inference_mode():
            old = self.redraw(src.z, src.text)  # the picture as the generator redraws it

        def compose(x: torch.Tensor) -> torch.Tensor:
            """A redraw blended with the picture where the picture must stay."""
            if user_mask is not None:
                return blend(x, x0, user_mask)
            if auto_keep:  # keep the picture's own pixels where the edit did not change the redraw
                return blend(x, x0, change_mask(x, old))
            return x

        def finish(z: torch.Tensor) -> torch.Tensor:
            return compose(self.redraw(z, coarse.expand(len(z), -1), None if fine is None else fine.expand(len(z), -1)))

        first = finish(zs)
        best = self._rank(first, target, x0)[:n]
        picked = zs[best]
        if refine_steps and target and self.model_cfg.arch == "textgan":
            keep_px = None if user_mask is None else 1 - user_mask
            picked = guided_refine(self.generator, self.describer, picked, coarse.expand(len(picked), -1), target,
                                   fine_text=None if fine is None else fine.expand(len(picked), -1),
                                   reference=x0, keep=keep_px, steps=refine_steps, seed=base, compose=compose)
        images = finish(picked)
        order = self._rank(images, target, x0)
        images, picked = images[order], picked[order]
        changed = None
        if auto_keep and out_size != native:  # where the redraw changed, for the blend at full resolution
            changed = change_mask(self.redraw(picked, coarse.expand(len(picked), -1),
                                              None if fine is None else fine.expand(len(picked), -1)), old)
        images = self.at_size(images, out_size, image, mask, changed)
        return self._results(images, picked, prompt, base, "edit", src, size=out_size, strength=strength,
                             coarse_prompt=src.prompt if mixed else None, blended=user_mask is not None or auto_keep,
                             mask=mask is not None, refine_steps=refine_steps)

    def vary(self, image: Image.Image, *, strength: float = 0.5, n: int = 4, seed: int | None = None,
             candidates: int | None = None, size: int | None = None, **options) -> list[GeneratedImage]:
        """``n`` variations: the picture's latent moved by ``strength`` under its own prompt, the ones
        that keep its described content first (at ``size``; default: the picture's own where the model
        draws it)."""
        self.check_vary(options, n, strength, seed)
        out_size = self.output_size(image, size)
        src = self.source(image)
        x0 = self.image_tensor(image)
        target = self.describe(image).attributes
        base = seed if seed is not None else secrets.randbelow(2**32)
        k = max(candidates or 3 * n, n)
        gen = torch.Generator().manual_seed(base)
        theta = strength * math.pi / 2
        zs = math.cos(theta) * src.z + math.sin(theta) * torch.randn((k, self.model_cfg.z_dim), generator=gen)
        images = self.redraw(zs, src.text.expand(k, -1))
        order = self._rank(images, target, x0, closeness=0.0)[:n]
        return self._results(self.upscale(images[order], out_size), zs[order], src.prompt, base, "vary", src,
                             size=out_size, strength=strength)

    @staticmethod
    def check_vary(options: dict, n: int, strength: float, seed: int | None) -> None:
        """What every variation request must be: no unknown options, 1–64 pictures, 0 < strength ≤ 1, a seed
        in range."""
        if options:
            raise UnsupportedOperation(f"unknown variation option(s): {', '.join(sorted(options))}")
        if not 1 <= n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {n}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be above 0 and at most 1, got {strength}")
        check_seed(seed)

    @torch.inference_mode()
    def _rank(self, images: torch.Tensor, target: dict[str, str], reference: torch.Tensor,
              closeness: float = 1.0) -> torch.Tensor:
        from pixelchat.vision.editing import rank

        probs = self.attribute_probabilities(images) if target else {}
        return rank(probs, target, self.describer.cfg.schema, images, reference, closeness)

    def _results(self, images: torch.Tensor, zs: torch.Tensor, prompt: str, seed: int, operation: str,
                 src: Source, size: int | None = None, **details) -> list[GeneratedImage]:
        """Pictures (B, 3, s, s), already at their output side, with their records."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pils = self.to_pil(images)
        request = GenerateRequest(prompt=prompt, size=size or self.model_cfg.size)
        out = []
        for i, (img, z) in enumerate(zip(pils, zs)):
            record = self.record(request, seed, z, created)
            info = {"operation": operation, "source": src.describe()}
            for key, value in details.items():
                info[key] = value[i] if isinstance(value, list) else value
            record[operation] = info
            out.append(GeneratedImage(img, prompt, seed, record))
        return out

    @staticmethod
    def to_pil(x: torch.Tensor) -> list[Image.Image]:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        return [Image.fromarray(a) for a in x]


@dataclass
class Source:
    """Where an edited picture starts: its latent (1, z_dim), prompt and prompt embedding (1, D)."""

    z: torch.Tensor
    prompt: str
    text: torch.Tensor
    how: str  # "record": the picture's own latent; "inversion": found by inverting it
    inversion: object | None  # pixelchat.vision.inversion.Inversion
    spec: object | None = None  # the picture's SceneSpec (spec-conditioned models: ``text`` is its value indices)
    familiar: bool | None = None  # an inverted picture: did it look like the scenes the describer knows?

    def describe(self) -> dict:
        out = {"how": self.how, "prompt": self.prompt}
        if self.inversion is not None:
            out["psnr"] = round(float(self.inversion.psnr[0]), 2)
        if self.familiar is not None:
            out["familiar"] = self.familiar
        return out

"""The diffusers engine: a diffusion pipeline (a local folder or a hub id) behind our engine protocol.

generate is text-to-image; edit is image-to-image, inpainting when a mask is given, or an
instruction edit when the pipeline is an InstructPix2Pix one; vary is image-to-image under the
picture's own prompt. The image-to-image and inpainting pipelines are built from the loaded
components (``from_pipe``), so the weights load once. Pipelines cannot describe pictures: an
image-to-text model (`pixelchat.vision.captioner`) or the built-in describer does. Weights load
from safetensors only; pickle files are refused before anything opens them.

Every call takes the settings people expect of a diffusion pipeline: steps, guidance, a scheduler
by name (`SCHEDULERS`), seed, strength (edits and variations) and size; the engine runs on the
device and in the dtype it was loaded with (`load_diffusers_engine`), optionally with its
components offloaded to the CPU between uses. Each picture's record names them all.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelchat.engines.base import (
    MAX_IMAGES, GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation, check_prompt, check_seed,
)
from pixelchat.training.checkpoint import PICKLE_SUFFIXES, CheckpointError, folder_or_hub

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_IMAGE_GUIDANCE = 1.5  # InstructPix2Pix: how closely the result follows the input picture
MIN_SIZE, MAX_SIZE = 32, 2048
TRUST = "convert it once, where you trust the file: "
CONVERT = ("python -c \"from diffusers import DiffusionPipeline; "
           "DiffusionPipeline.from_pretrained('{src}').save_pretrained('{src}-safetensors', safe_serialization=True)\"")
# Schedulers by the names people use for them (A1111's sampler names in brackets): the class, and
# the config it gets over the pipeline's own scheduler config.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # (PLMS; as Stable Diffusion configures it: any step count)
    "lms": ("LMSDiscreteScheduler", {}),  # (LMS)
    "euler": ("EulerDiscreteScheduler", {}),  # (Euler)
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),  # (Euler a)
    "heun": ("HeunDiscreteScheduler", {}),  # (Heun)
    "dpm++": ("DPMSolverMultistepScheduler", {}),  # (DPM++ 2M)
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),  # (DPM++ 2M Karras)
    "dpm++-single": ("DPMSolverSinglestepScheduler", {}),  # (DPM++ 2S)
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),  # flow-matching pipelines (SD3, Flux)
}
DEVICES = ("cuda", "mps", "cpu")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CONVERT_FILE = ("python -c \"from diffusers import StableDiffusionPipeline; "
                "StableDiffusionPipeline.from_single_file('{src}').save_pretrained('{dst}', safe_serialization=True)\"")


@contextmanager
def quiet():
    """diffusers' and transformers' chatter (progress bars, advice, warnings) off while a pipeline
    loads or runs; errors still raise."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = [(log, log.get_verbosity(), log.is_progress_bar_enabled()) for log in (dlog, tlog)]
    for log, _, _ in before:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        yield
    finally:
        for log, level, bars in before:
            log.set_verbosity(level)
            if bars:
                log.enable_progress_bar()


# --- finding and checking the weights ----------------------------------------------------------


def pipeline_folder(model: str | Path) -> tuple[Path, str | None]:
    """The local folder of ``model``, and its hub id when it came from the hub (fetched, safetensors
    only, into the Hugging Face cache). Pickle weights are refused."""
    return folder_or_hub(model, what="pipeline folder", check=check_folder, fetch=fetch_pipeline,
                         single_file=single_file_error)


def fetch_pipeline(name: str) -> Path:
    with quiet():
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(name, use_safetensors=True))


def single_file_error(path: Path) -> str:
    convert = CONVERT_FILE.format(src=path, dst=path.with_suffix(""))
    if path.suffix in PICKLE_SUFFIXES:
        return (f"{path} holds pickle weights, which can run code when loaded; pixelchat loads safetensors only: "
                + TRUST + convert)
    return (f"{path} is a single file; the diffusers engine loads a pipeline folder (one with model_index.json); "
            "make one: " + convert)


def check_folder(folder: Path) -> None:
    """A pipeline folder we can load without unpickling anything: model_index.json, and each
    component's weights in readable safetensors files."""
    index = folder / "model_index.json"
    pickles = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if not index.is_file():
        hint = f"; it holds pickle weights ({', '.join(pickles)}), which pixelchat does not load" if pickles else ""
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder: it has no model_index.json{hint}")
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{index} is not readable JSON: {e}") from None
    for name in components:
        part = folder / name
        if name.startswith("_") or not part.is_dir():
            continue
        files = [p for p in part.iterdir() if p.is_file()]
        if any(p.suffix in PICKLE_SUFFIXES for p in files) and not any(p.suffix == ".safetensors" for p in files):
            found = ", ".join(p.relative_to(folder).as_posix() for p in files if p.suffix in PICKLE_SUFFIXES)
            raise CheckpointError(f"{folder} holds pickle weights ({found}), which can run code when loaded; "
                                  "pixelchat loads safetensors only: " + TRUST + CONVERT.format(src=folder))
    from safetensors import safe_open

    for f in weight_files(folder):
        try:
            with safe_open(f, "pt"):
                pass
        except Exception as e:  # safetensors raises its own error type for a bad header or short file
            raise CheckpointError(f"{f} is not a readable safetensors file ({e}); the pipeline folder is "
                                  "corrupt or incomplete") from None


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.safetensors"), key=lambda p: p.relative_to(folder).as_posix())


def folder_sha256(folder: Path) -> str:
    """One digest for all weight files: SHA-256 over each file's relative path and SHA-256."""
    total = hashlib.sha256()
    for f in weight_files(folder):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        total.update(f"{f.relative_to(folder).as_posix()}\0{h.hexdigest()}\n".encode())
    return total.hexdigest()


def scheduler_spec(name: str) -> tuple[str, dict]:
    """The scheduler class and config overrides a name (`SCHEDULERS`) stands for; an unknown name is
    a ValueError listing the names."""
    key = str(name).strip().lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[key]


def runtime(device: str | None = None, dtype: str | None = None, offload: bool = False) -> tuple[str, str]:
    """The device and dtype name a pipeline runs in, checked against this machine. Default: CUDA in
    fp16 when a GPU is visible, else the CPU in fp32. ``offload``: components wait on the CPU and move
    to the GPU while they run (less GPU memory, a little slower); it needs CUDA and `accelerate`."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = str(device).strip().lower().partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {device!r}: choose one of cuda, cuda:N, mps, cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "torch here is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r} is not available: {why} (torch {torch.__version__}); "
                             "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} "
                             "CUDA GPU(s), numbered from 0")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} is not available: no Apple GPU (MPS) here; use --device cpu")
    name = dtype or ("fp32" if kind == "cpu" else "fp16")
    name = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32"}.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if kind == "cpu" and name == "fp16":
        raise ValueError("dtype fp16 needs a GPU: on the CPU use fp32 (or bf16)")
    if offload:
        if kind != "cuda":
            raise ValueError(f"CPU offload moves components to a CUDA GPU while they run; device {device!r} is not one")
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise UnsupportedOperation("CPU offload needs the accelerate package: pip install 'pixelchat[diffusers]'")
    return str(device).strip().lower(), name


def place(pipeline, device: str, offload: bool) -> None:
    """Move ``pipeline`` to ``device``, or with ``offload`` let accelerate move each component there
    while it runs."""
    if offload:
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)


# --- the engine --------------------------------------------------------------------------------


class DiffusersEngine:
    """Serves a diffusers pipeline. ``steps``, ``guidance``, ``scheduler`` (a name in `SCHEDULERS`;
    None: the pipeline's own) and ``image_guidance`` (InstructPix2Pix) are the defaults of every
    call; each call may give its own. ``batch_size``: most images generated in one pipeline call.
    ``device``, ``dtype``, ``offload``: where the pipeline was placed (see `runtime`), for records."""

    pipeline_settings = True  # takes steps, guidance and scheduler (engines.base.check_pipeline_settings)
    open_vocabulary = True  # draws from free words: conversations rewrite its prompt (conversation.session)

    def __init__(self, pipeline, *, name: str, path: str, sha256: str, steps: int = DEFAULT_STEPS,
                 guidance: float = DEFAULT_GUIDANCE, image_guidance: float = DEFAULT_IMAGE_GUIDANCE,
                 scheduler: str | None = None, batch_size: int = 8, describer=None, device: str = "cpu",
                 dtype: str = "fp32", offload: bool = False):
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.image_guidance = steps, guidance, image_guidance
        self.scheduler = scheduler
        self.device, self.dtype, self.offload = device, dtype, offload
        self._schedulers: dict[str, object] = {}
        self.batch_size = batch_size
        # InstructPix2Pix pipelines edit by instruction: `pixelchat.edit` hands them the user's words as said.
        self.instruction_edits = "InstructPix2Pix" in type(pipeline).__name__
        self._describer = describer  # a Describer, a checkpoint path, or None for the shipped one
        self._derived: dict[str, object] = {}
        self._lock = threading.Lock()  # a pipeline's scheduler keeps per-call state
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        sample = getattr(pipeline, "default_sample_size", None) or denoiser.config.sample_size
        text_encoder = getattr(pipeline, "text_encoder", None)
        self.info = ModelInfo(id=name, sha256=sha256, engine="diffusers", arch=type(pipeline).__name__,
                              size=int(sample) * pipeline.vae_scale_factor,
                              text_encoder=type(text_encoder).__name__ if text_encoder is not None else "",
                              path=path)

    # 1. check inputs
    def check_inputs(self, request: GenerateRequest) -> None:
        if self.instruction_edits:
            raise UnsupportedOperation(f"{self.info.id} is an instruction-editing pipeline ({self.info.arch}): it "
                                       "changes pictures and cannot draw from text alone; use edit")
        check_prompt(request.prompt, request.negative_prompt)
        if not 1 <= request.n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {request.n}")
        if request.size is not None and (request.size % 8 or not MIN_SIZE <= request.size <= MAX_SIZE):
            raise ValueError(f"size must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}, got {request.size}")
        check_seed(request.seed)
        if request.truncation is not None:
            raise UnsupportedOperation("truncation is an option of the GAN engine; diffusion pipelines do not use it")
        if request.attempts is not None:
            raise UnsupportedOperation("attempts is an option of the built-in spec models, whose describer checks "
                                       "their pictures; a diffusion pipeline's are not checked")
        steps, guidance, scheduler = self.settings(request.steps, request.guidance, request.scheduler)
        self._check_run(steps, guidance)
        self.scheduler_for(scheduler)

    def settings(self, steps: int | None, guidance: float | None, scheduler: str | None) -> tuple[int, float, str | None]:
        """A call's steps, guidance and scheduler name: its own, else the engine's defaults."""
        return (self.steps if steps is None else steps, self.guidance if guidance is None else guidance,
                self.scheduler if scheduler is None else scheduler)

    def scheduler_for(self, name: str | None):
        """The scheduler a name stands for, built from the pipeline's own scheduler config (None: the
        pipeline's own). One that does not fit the pipeline (a flow-matching scheduler on a noise-
        prediction model, or the reverse) is a ValueError naming those that do."""
        if name is None:
            return None
        key = name.strip().lower()
        if key not in self._schedulers:
            import diffusers

            class_name, overrides = scheduler_spec(key)
            own = self.pipeline.scheduler
            names = self.fitting_schedulers()
            if class_name not in {SCHEDULERS[n][0] for n in names}:
                raise ValueError(f"scheduler {name!r} ({class_name}) does not fit {self.info.arch}, whose scheduler "
                                 f"is {type(own).__name__}; it takes: {', '.join(names) or 'its own only'}")
            try:
                self._schedulers[key] = getattr(diffusers, class_name).from_config(own.config, **overrides)
            except ImportError as e:  # a scheduler that needs a package not installed (scipy for lms)
                raise UnsupportedOperation(f"scheduler {name!r} needs a package that is not installed: {e}") from None
        return self._schedulers[key]

    def fitting_schedulers(self) -> list[str]:
        """The scheduler names (`SCHEDULERS`) that fit this pipeline: its own kind and those diffusers
        lists as compatible with it."""
        own = self.pipeline.scheduler
        fits = {c.__name__ for c in getattr(own, "compatibles", ())} | {type(own).__name__}
        return [n for n, (c, _) in SCHEDULERS.items() if c in fits]

    def scheduler_name(self, name: str | None, pipeline=None) -> str:
        """The class name of the scheduler a call runs."""
        return SCHEDULERS[name.strip().lower()][0] if name else type((pipeline or self.pipeline).scheduler).__name__

    @staticmethod
    def _check_run(steps: int, guidance: float, strength: float | None = None) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {steps}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= guidance <= 50.0:
            raise ValueError(f"guidance must be between 0 and 50, got {guidance}")
        if strength is not None:
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"strength must be above 0 and at most 1, got {strength}")
            if int(steps * strength) < 1:  # image-to-image runs the last steps × strength steps
                raise ValueError(f"strength {strength} with {steps} steps leaves no denoising step; "
                                 f"use strength ≥ {math.ceil(100 / steps) / 100:.2f} or more steps")

    # 2. seeds: one generator per image, on the CPU so that a seed gives the same noise on any device
    @staticmethod
    def generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    # 3. run the pipeline, with the call's scheduler in place of its own for the call
    def _run(self, pipeline, scheduler: str | None = None, **kwargs) -> list[Image.Image]:
        chosen = self.scheduler_for(scheduler)
        with self._lock, quiet(), torch.inference_mode():  # a prompt past the text encoder's limit is cut
            own = pipeline.scheduler
            if chosen is not None:
                pipeline.scheduler = chosen
            try:
                return pipeline(output_type="pil", **kwargs).images
            finally:
                pipeline.scheduler = own

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage]]:
        """Several requests together, ``batch_size`` images of one size per pipeline call; image i
        of a request gets its seed + i, so each picture is the one a `generate` call alone draws."""
        for request in requests:
            self.check_inputs(request)
        if sum(r.n for r in requests) > MAX_IMAGES:
            raise ValueError(f"a batch draws at most {MAX_IMAGES} images")

        def how(r: GenerateRequest) -> tuple:  # what images drawn in one pipeline call share
            return (r.size or self.info.size, *self.settings(r.steps, r.guidance, r.scheduler))

        todo = [(i, r, (r.seed if r.seed is not None else secrets.randbelow(2**32)) + k)  # one per image
                for i, r in enumerate(requests) for k in range(r.n)]
        out: list[list[GeneratedImage]] = [[] for _ in requests]
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for size, steps, guidance, scheduler in dict.fromkeys(how(r) for r in requests):
            same = [t for t in todo if how(t[1]) == (size, steps, guidance, scheduler)]
            for start in range(0, len(same), self.batch_size):
                chunk = same[start:start + self.batch_size]
                images = self._run(self.pipeline, scheduler, prompt=[r.prompt for _, r, _ in chunk],
                                   negative_prompt=[r.negative_prompt or "" for _, r, _ in chunk],
                                   generator=self.generators([s for _, _, s in chunk]), height=size, width=size,
                                   num_inference_steps=steps, guidance_scale=guidance)
                for (i, r, s), image in zip(chunk, images):
                    record = self.record(r.prompt, r.negative_prompt, s, image.size, type(self.pipeline).__name__,
                                         steps, guidance, created, scheduler)
                    out[i].append(GeneratedImage(image, r.prompt, s, record))
        return out

    def record(self, prompt: str, negative_prompt: str | None, seed: int, size: tuple[int, int], pipeline: str,
               steps: int, guidance: float, created: str, scheduler: str | None = None) -> dict:
        """Everything needed to say how the image was made, and to make it again: the settings of the
        call (``scheduler_name``: the name asked for; None for the pipeline's own) and where it ran."""
        return {
            "prompt": prompt, "negative_prompt": negative_prompt, "seed": seed, "size": list(size),
            "steps": steps, "guidance": guidance, "pipeline": pipeline,
            "scheduler": self.scheduler_name(scheduler), "scheduler_name": scheduler,
            "device": self.device, "dtype": self.dtype, "offload": self.offload, **self.info.made_by(created),
        }

    # --- describe, edit, vary ------------------------------------------------------------------

    @property
    def describer(self):
        """What `describe` reads pictures with (loaded on first use): an image-to-text model (a
        `Captioner`: the one set here, else ``PIXELCHAT_DESCRIBER``), else the built-in describer."""
        from pixelchat.vision.captioner import chosen_describer, is_captioner, load_captioner

        if self._describer is None and chosen_describer() is not None:
            self._describer = load_captioner(chosen_describer())
        elif is_captioner(self._describer) and isinstance(self._describer, (str, Path)):
            self._describer = load_captioner(self._describer)
        elif self._describer is None or isinstance(self._describer, (str, Path)):
            from pixelchat.vision.describer import load_describer

            self._describer = load_describer(self._describer)
        return self._describer

    @describer.setter
    def describer(self, describer) -> None:
        """Another describer: a Describer or its checkpoint path, a Captioner or an image-to-text model's
        folder or hub id (None: ``PIXELCHAT_DESCRIBER``, else the shipped describer)."""
        self._describer = describer

    def describe(self, image: Image.Image):
        """What the picture shows (diffusion pipelines cannot say): in free words by an image-to-text
        model where one is set, else by the built-in describer, in the words of the scenes it was
        trained on."""
        from pixelchat.vision.captioner import Captioner
        from pixelchat.vision.describer import describe_images, image_to_tensor

        describer = self.describer
        if isinstance(describer, Captioner):
            return describer.describe(image)
        with torch.inference_mode():
            return describe_images(describer, image_to_tensor(image))[0]

    def derived(self, task: str):
        """The image-to-image or inpainting pipeline over the loaded components (no weights copied)."""
        if task not in self._derived:
            try:
                with quiet():
                    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                    auto = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForInpainting
                    pipe = auto.from_pipe(self.pipeline)
            except (ValueError, KeyError) as e:
                raise UnsupportedOperation(f"{self.info.arch} has no {task} counterpart in diffusers ({e})") from None
            pipe.set_progress_bar_config(disable=True)
            self._derived[task] = pipe
        return self._derived[task]

    def working_size(self, image: Image.Image) -> tuple[int, int]:
        """The size a picture is edited at: its shape, with the longer side at the model's native
        size, both sides multiples of 8."""
        w, h = image.size
        scale = self.info.size / max(w, h)
        return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)

    def edit(self, image: Image.Image, prompt: str, *, mask=None, strength: float | None = None, n: int = 1,
             seed: int | None = None, target: dict[str, str] | None = None, negative_prompt: str | None = None,
             steps: int | None = None, guidance: float | None = None, image_guidance: float | None = None,
             scheduler: str | None = None, **options) -> list[GeneratedImage]:
        """Redraw ``image`` under ``prompt`` (for an InstructPix2Pix pipeline: the instruction).

        mask: an (H, W) array in [0, 1] at the image's size (or a mask picture), 1 where the picture
        may change: inpainting, and outside the mask the picture's own pixels are kept. strength:
        how far the redraw may move from the picture (default 0.6; 1.0 when inpainting); an
        instruction edit does not use it (image_guidance says how closely it keeps the picture).
        target: the scene attributes asked for; diffusion edits are not re-ranked by them."""
        if options:
            raise UnsupportedOperation(f"unknown edit option(s) for the diffusers engine: {', '.join(sorted(options))}")
        mode = "instruct" if self.instruction_edits else ("inpaint" if mask is not None else "img2img")
        steps, guidance, scheduler = self.settings(steps, guidance, scheduler)
        if mode == "instruct":
            strength = None
        elif strength is None:
            strength = 1.0 if mode == "inpaint" else 0.6
        check_prompt(prompt, negative_prompt)
        self._check_run(steps, guidance, strength)
        self.scheduler_for(scheduler)
        check_seed(seed)
        if not 1 <= n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {n}")
        size = self.working_size(image)
        picture = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        change = None if mask is None else self.mask_at(mask, image.size, size)  # (h, w) in [0, 1]
        base = seed if seed is not None else secrets.randbelow(2**32)
        common = dict(prompt=prompt, negative_prompt=negative_prompt or "", image=picture, num_images_per_prompt=n,
                      num_inference_steps=steps, guidance_scale=guidance,
                      generator=self.generators([base + i for i in range(n)]))
        if mode == "instruct":
            image_guidance = self.image_guidance if image_guidance is None else image_guidance
            pipe = self.pipeline
            images = self._run(pipe, scheduler, image_guidance_scale=image_guidance, **common)
        elif mode == "inpaint":
            pipe = self.derived("inpaint")
            mask_image = Image.fromarray((change * 255).round().astype(np.uint8), "L")
            images = self._run(pipe, scheduler, mask_image=mask_image, strength=strength, height=size[1],
                               width=size[0], **common)
        else:
            pipe = self.derived("img2img")
            images = self._run(pipe, scheduler, strength=strength, **common)
        if change is not None:  # outside the mask the picture stays exactly as it was
            images = [composite(out, picture, change) for out in images]
        details = {"mode": mode, "strength": strength, "mask": mask is not None}
        if mode == "instruct":
            details["image_guidance"] = image_guidance
        return self._results(images, prompt, negative_prompt, base, "edit", image, type(pipe).__name__, steps,
                             guidance, details, scheduler)

    @staticmethod
    def mask_at(mask, image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The edit mask as a float array (h, w) in [0, 1] at the working size."""
        if isinstance(mask, Image.Image):
            from pixelchat.imagefiles import mask_array

            mask = mask_array(mask, image_size)
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != (image_size[1], image_size[0]):
            raise ValueError(f"the mask is {m.shape[1]}×{m.shape[0]} but the image is "
                             f"{image_size[0]}×{image_size[1]}; they must be the same size")
        grey = Image.fromarray((np.clip(m, 0, 1) * 255).round().astype(np.uint8), "L")
        resized = grey.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.float32) / 255.0

    def vary(self, image: Image.Image, *, strength: float = 0.5, n: int = 4, seed: int | None = None,
             negative_prompt: str | None = None, steps: int | None = None, guidance: float | None = None,
             scheduler: str | None = None, **options) -> list[GeneratedImage]:
        """``n`` variations: image-to-image of the picture under its own prompt (from its record;
        an empty prompt for a picture without one), ``strength`` (0–1] how different."""
        if options:
            raise UnsupportedOperation(f"unknown variation option(s) for the diffusers engine: "
                                       f"{', '.join(sorted(options))}")
        if self.instruction_edits:
            raise UnsupportedOperation(f"{self.info.id} is an instruction-editing pipeline ({self.info.arch}); "
                                       "it makes no variations: edit with an instruction instead")
        from pixelchat.imagefiles import read_record

        if not 1 <= n <= MAX_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {n}")
        steps, guidance, scheduler = self.settings(steps, guidance, scheduler)
        self._check_run(steps, guidance, strength)
        self.scheduler_for(scheduler)
        check_seed(seed)
        prompt = str((read_record(image) or {}).get("prompt") or "")
        check_prompt(prompt, negative_prompt, empty_ok=True)
        picture = image.convert("RGB").resize(self.working_size(image), Image.Resampling.LANCZOS)
        base = seed if seed is not None else secrets.randbelow(2**32)
        pipe = self.derived("img2img")
        images = self._run(pipe, scheduler, prompt=prompt, negative_prompt=negative_prompt or "", image=picture,
                           strength=strength, num_images_per_prompt=n, num_inference_steps=steps,
                           guidance_scale=guidance, generator=self.generators([base + i for i in range(n)]))
        return self._results(images, prompt, negative_prompt, base, "vary", image, type(pipe).__name__, steps,
                             guidance, {"strength": strength}, scheduler)

    def _results(self, images: list[Image.Image], prompt: str, negative_prompt: str | None, base: int,
                 operation: str, source: Image.Image, pipeline: str, steps: int, guidance: float,
                 details: dict, scheduler: str | None = None) -> list[GeneratedImage]:
        from pixelchat.imagefiles import read_record

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        origin = read_record(source) or {}
        src = {"how": "pixels", "prompt": origin.get("prompt", ""), "size": list(source.size)}
        if origin.get("model", {}).get("sha256"):
            src["model_sha256"], src["seed"] = origin["model"]["sha256"], origin.get("seed")
        out = []
        for i, img in enumerate(images):
            record = self.record(prompt, negative_prompt, base + i, img.size, pipeline, steps, guidance, created,
                                 scheduler)
            record[operation] = {"operation": operation, "source": src, **details}
            out.append(GeneratedImage(img, prompt, base + i, record))
        return out


def composite(result: Image.Image, picture: Image.Image, mask: np.ndarray) -> Image.Image:
    """``result`` where ``mask`` is 1, ``picture`` where it is 0, blended in between."""
    m = mask[..., None]  # (h, w, 1)
    mixed = np.asarray(result, dtype=np.float32) * m + np.asarray(picture, dtype=np.float32) * (1 - m)
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


# --- loading -----------------------------------------------------------------------------------


def load_diffusers_engine(model: str | Path | None, *, device: str | None = None, dtype: str | None = None,
                          offload: bool = False) -> DiffusersEngine:
    """The engine for a pipeline folder (one with model_index.json) or a hub id ("owner/name"),
    loaded once per folder version and placement. device: cuda, cuda:N, mps or cpu (default: CUDA
    when a GPU is visible, else the CPU); dtype: fp16, bf16 or fp32 (default: fp16 on a GPU, fp32 on
    the CPU); offload: model CPU offload (CUDA, `accelerate`). A device that is not there is a
    ValueError before anything loads."""
    if not model:
        raise CheckpointError("the diffusers engine needs a pipeline: a folder with model_index.json or a hub id "
                              "such as stable-diffusion-v1-5/stable-diffusion-v1-5")
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        raise UnsupportedOperation("the diffusers engine needs the diffusers package: "
                                   "pip install 'pixelchat[diffusers]'")
    device, dtype = runtime(device, dtype, offload)
    folder, hub_id = pipeline_folder(model)
    return _load(str(folder), hub_id, (folder / "model_index.json").stat().st_mtime, device, dtype, bool(offload))


@lru_cache(maxsize=2)
def _load(folder: str, hub_id: str | None, mtime: float, device: str, dtype: str, offload: bool) -> DiffusersEngine:
    try:
        with quiet():
            from diffusers import DiffusionPipeline

            pipeline = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, dtype=DTYPES[dtype],
                                                         local_files_only=True)
    except Exception as e:  # diffusers and transformers raise many types for a broken folder
        raise CheckpointError(f"could not load the pipeline in {folder}: {str(e).splitlines()[0]}") from None
    place(pipeline, device, offload)
    return DiffusersEngine(pipeline, name=hub_id or Path(folder).name, path=hub_id or folder,
                           sha256=folder_sha256(Path(folder)), device=device, dtype=dtype, offload=offload)

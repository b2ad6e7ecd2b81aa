"""The dual-path engine: the prompt becomes a scene spec (text path), the spec is drawn (image path).

    prompt ──prompt reader──▶ said values ──completed from the prior (seed)──▶ spec ──generator(z, spec)──▶ picture

Every picture's record holds its spec (each value said, filled in or seen, with the reader's
confidence) and its latent, so an edit changes the asked values of the spec, keeps z and every
value the user did not touch, and redraws.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from pixelchat.data.spec import FILLED, SEEN, SceneSpec, SpecError, check_values, complete_spec, is_scenes
from pixelchat.engines.base import GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation
from pixelchat.engines.gan import GANEngine, Source, latent_for_seed
from pixelchat.training.checkpoint import CheckpointError, load_generator


READING_CACHE = 4096  # prompts whose reading is kept
# How far edit candidates move from the picture's latent when several are asked for at strength 0.
DEFAULT_SPREAD = 0.35


DEFAULT_ATTEMPTS = 4  # draws of a new picture at most while it misses what its prompt said
MAX_ATTEMPTS = 16


def default_attempts() -> int:
    """``PIXELCHAT_ATTEMPTS`` (1 turns the self-check off, as for the fastest serving), else DEFAULT_ATTEMPTS."""
    import os

    text = os.environ.get("PIXELCHAT_ATTEMPTS", "").strip()
    if not text:
        return DEFAULT_ATTEMPTS
    if not text.isdigit() or not 1 <= int(text) <= MAX_ATTEMPTS:
        raise ValueError(f"PIXELCHAT_ATTEMPTS must be a whole number from 1 to {MAX_ATTEMPTS}, got {text!r}")
    return int(text)


def attempt_seed(seed: int, attempt: int) -> int:
    """The latent seed of a picture's ``attempt``-th draw (1: the picture's own seed)."""
    if attempt == 1:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, attempt, 0xA77E]).generate_state(1, np.uint64)[0] >> 1)


class SpecEngine(GANEngine):
    """Serves a spec-conditioned generator (arch ``specgan``) with the prompt reader for its schema."""

    checks_pictures = True  # new pictures are read back by the checker (`self_check`)
    spec_edits = True  # edits take the asked changes as spec values (see `edit`)

    def __init__(self, path: str | Path, *, encoder=None, reader=None, describer=None,
                 upsampler: str | Path | bool | None = None, runtime: str | None = None):
        self.use_runtime(runtime)
        self.default_attempts = default_attempts()
        self.generator, self.model_cfg, ckpt = load_generator(path)
        config = ckpt.config
        if self.model_cfg.arch != "specgan" or not self.model_cfg.schema:
            raise CheckpointError(f"checkpoint {ckpt.path} is not a spec-conditioned generator")
        self.schema = {k: list(v) for k, v in self.model_cfg.schema.items()}
        self._encoder, self._reader = encoder, reader
        self._readings: OrderedDict[str, tuple[dict, dict]] = OrderedDict()  # prompt → reading, most recent last
        self._lock = threading.RLock()
        self._describer = describer
        self._describer_is_default, self._checker = describer is None, None
        self._inverter_path, self._inverter = None, False  # inversion starts from random latents
        self.info = ModelInfo(id=config.get("name") or ckpt.path.stem, sha256=ckpt.sha256, engine="gan",
                              arch="specgan", size=self.model_cfg.size, text_encoder="prompt-reader",
                              path=str(ckpt.path))
        self.attach_upsampler(config, upsampler)

    # --- the text path ------------------------------------------------------------------------

    @property
    def reader(self):
        """The prompt reader for this schema (the shipped one for scenes), or None: class names are
        matched as words."""
        if self._reader is None and is_scenes(self.schema):
            from pixelchat.text.reader import load_reader

            self._reader = load_reader()
            if self._reader.cfg.schema != self.schema:
                raise CheckpointError("the prompt reader was trained for another schema than this model's")
        return self._reader

    @property
    def encoder(self):
        if self._encoder is None:
            from pixelchat.text.encoder import load_text_encoder

            self._encoder = load_text_encoder(self.reader.cfg.text_encoder if self.reader else "all-MiniLM-L6-v2")
        return self._encoder

    @encoder.setter
    def encoder(self, value) -> None:
        self._encoder = value

    def read(self, prompts: list[str]) -> list[tuple[dict[str, str], dict[str, float]]]:
        """Each prompt's said values and the reader's confidence in them (cached per prompt: the same
        prompt again costs no encoder pass)."""
        if self.reader is None:
            return [match_classes(p, self.schema) for p in prompts]
        from pixelchat.text.encoder import DeferredEncoder
        from pixelchat.text.reader import read_prompts

        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._readings))
            if missing:
                encoder = DeferredEncoder(lambda: self.encoder)  # loaded only for words the patterns leave unexplained
                for p, r in zip(missing, read_prompts(self.reader, encoder, missing)):
                    self._readings[p] = (r.values, r.confidence)
            out = []
            for p in prompts:
                self._readings.move_to_end(p)
                values, confidence = self._readings[p]
                out.append((dict(values), dict(confidence)))
            while len(self._readings) > READING_CACHE:
                self._readings.popitem(last=False)
            return out

    def specs_for(self, request: GenerateRequest, seeds: list[int], reading=None) -> list[SceneSpec]:
        """The spec of each picture: what the prompt (or ``request.spec``) says, the rest from the prior."""
        said, confidence = reading if reading is not None else self.read([request.prompt])[0]
        if request.spec:
            said, confidence = {**said, **request.spec}, {**confidence, **{k: 1.0 for k in request.spec}}
        try:
            check_values(said, self.schema)
        except SpecError as e:
            raise ValueError(f"the prompt asks for something this model cannot draw: {e}") from None
        return [complete_spec(said, self.schema, s, confidence) for s in seeds]

    # --- generate ------------------------------------------------------------------------------

    def check_inputs(self, request: GenerateRequest) -> None:
        super().check_inputs(request)
        self.attempts_for(request)
        if request.spec is not None:
            try:
                check_values(request.spec, self.schema)
            except SpecError as e:
                raise ValueError(str(e)) from None

    def encode_prompt(self, prompt: str, n: int) -> torch.Tensor:
        """The generator's condition for ``prompt``: (n, A) value indices of its spec completed from seed 0."""
        return self.spec_tensor(self.specs_for(GenerateRequest(prompt), [0])).expand(n, -1)

    def calibration_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The int8 runtime's calibration rows: latents of fixed seeds with specs drawn from the prior."""
        seeds = list(self.CALIBRATION_SEEDS)
        specs = self.spec_tensor([complete_spec({}, self.schema, s) for s in seeds])
        return [(z[None], c[None]) for z, c in zip(self.prepare_latents(seeds, None), specs)]

    def spec_tensor(self, specs: list[SceneSpec]) -> torch.Tensor:
        return torch.tensor([s.indices(self.schema) for s in specs], dtype=torch.long)  # (n, A)

    @torch.inference_mode()
    def decode(self, z: torch.Tensor, spec: torch.Tensor, sizes: list[int] | int | None = None) -> list[Image.Image]:
        return self.pictures(self.draw(z, spec), self.model_cfg.size if sizes is None else sizes)

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]:
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage]]:
        seeds = self.batch_seeds(requests)
        readings = self.read([r.prompt.strip() for r in requests])
        specs = [self.specs_for(r, s, reading) for r, s, reading in zip(requests, seeds, readings)]
        z = torch.cat([self.prepare_latents(s, r.truncation) for s, r in zip(seeds, requests)])
        cond = self.spec_tensor([x for ss in specs for x in ss])
        with torch.inference_mode():
            x = self.draw(z, cond)
        rows = [(r, s, sp) for r, ss, sps in zip(requests, seeds, specs) for s, sp in zip(ss, sps)]
        x, z, final, checks = self.self_check(x, z, rows)
        images = self.pictures(x, [self.check_size(r.size) for r, _, _ in rows])
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out, i = [], 0
        for r in requests:
            out.append([GeneratedImage(images[k], r.prompt, rows[k][1],
                                       self.spec_record(r, rows[k][1], z[k], final[k], created, checks[k]))
                        for k in range(i, i + r.n)])
            i += r.n
        return out

    def spec_record(self, request: GenerateRequest, seed: int, z: torch.Tensor, spec: SceneSpec, created: str,
                    check: dict | None = None) -> dict:
        out = {**self.record(request, seed, z, created), "spec": spec.to_dict()}
        if check is not None:
            out["check"] = check
        return out

    # --- the self-check of new pictures ---------------------------------------------------------

    def attempts_for(self, request: GenerateRequest) -> int:
        attempts = self.default_attempts if request.attempts is None else request.attempts
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise ValueError(f"attempts must be between 1 and {MAX_ATTEMPTS}, got {attempts}")
        return attempts if is_scenes(self.schema) else 1  # the checker reads scenes only

    def self_check(self, x: torch.Tensor, z: torch.Tensor,
                   rows: list[tuple[GenerateRequest, int, SceneSpec]]) -> tuple[torch.Tensor, torch.Tensor, list, list]:
        """Each new picture whose prompt said something is read by the checker; one that misses a said
        value is drawn again from another latent and another completion of what the prompt left open (both
        derived from its seed, so prompt + seed still make the same picture), up to the request's
        ``attempts`` draws; the first that shows everything said is kept, else the one likeliest to.
        Returns the pictures, their latents, their specs and each one's check for its record (None where
        nothing was checked)."""
        specs = [sp for _, _, sp in rows]
        targets = [{k: v for k, v in _observable(sp.values, self.schema).items() if sp.source.get(k) == "said"}
                   if self.attempts_for(r) > 1 else {} for r, _, sp in rows]

        def propose(i: int, attempt: int) -> tuple[torch.Tensor, SceneSpec]:
            request, seed, spec = rows[i]
            s = attempt_seed(seed, attempt)
            return (latent_for_seed(s, self.model_cfg.z_dim, request.truncation),
                    complete_spec(spec.said, self.schema, s, spec.confidence))

        return self._checked(x, z, specs, targets, [self.attempts_for(r) for r, _, _ in rows], propose)

    def _checked(self, x: torch.Tensor, z: torch.Tensor, specs: list[SceneSpec], targets: list[dict[str, str]],
                 limits: list[int], propose, key: str = "shows_what_was_said") -> tuple[torch.Tensor, torch.Tensor, list, list]:
        """The check behind `self_check` and `vary`: picture i must show ``targets[i]``; ``propose(i, attempt)``
        gives the latent and spec of its next draw; at most ``limits[i]`` draws. ``key``: the record's name
        for whether the kept draw shows its target."""
        specs = list(specs)
        todo = [i for i, t in enumerate(targets) if t and limits[i] > 1]
        checks: list[dict | None] = [None] * len(specs)
        if not todo:
            return x, z, specs, checks
        x, z = x.clone(), z.clone()
        best = {i: float("-inf") for i in todo}
        for attempt in range(1, max(limits[i] for i in todo) + 1):
            todo = [i for i in todo if attempt <= limits[i]]
            if not todo:
                break
            if attempt == 1:
                xs, zs, tried = x[todo], z[todo], [specs[i] for i in todo]
            else:
                proposals = [propose(i, attempt) for i in todo]
                zs, tried = torch.stack([p[0] for p in proposals]), [p[1] for p in proposals]
                with torch.inference_mode():
                    xs = self.draw(zs, self.spec_tensor(tried))
            fits, scores = self._fits(xs, [targets[i] for i in todo])
            for j, i in enumerate(todo):
                if fits[j] or scores[j] > best[i]:
                    x[i], z[i], specs[i], best[i] = xs[j], zs[j], tried[j], scores[j]
                    checks[i] = {"attempt": attempt, key: bool(fits[j]), "by": self.checker_name}
                checks[i]["attempts"] = attempt
            todo = [i for j, i in enumerate(todo) if not fits[j]]
        return x, z, specs, checks

    @property
    def checker_name(self) -> str:
        """What the records say read the pictures back: "checker" (the shipped one) or "describer"."""
        return "describer" if self.checker is self._describer else "checker"  # without loading the describer

    def _fits(self, images: torch.Tensor, targets: list[dict[str, str]]) -> tuple[list[bool], list[float]]:
        """Per picture: does the checker read every target value, and the mean log-probability it gives them
        (as `pixelchat.vision.editing.agreement`, in Python floats: a few numbers per picture)."""
        with torch.inference_mode():
            probs = {k: p.tolist() for k, p in self.attribute_probabilities(images, "checker").items()}
        schema = self.checker.cfg.schema
        fits, scores = [], []
        for j, target in enumerate(targets):
            said = [(probs[k][j], schema[k].index(v)) for k, v in target.items() if k in probs and v in schema[k]]
            fits.append(all(max(range(len(row)), key=row.__getitem__) == i for row, i in said))
            scores.append(sum(math.log(max(row[i], 1e-6)) for row, i in said) / len(said) if said else 0.0)
        return fits, scores

    # --- edit, vary ----------------------------------------------------------------------------

    def attributes_of(self, image: Image.Image) -> dict[str, str]:
        """What a picture shows as edits start from it: its spec when this model drew it (the record),
        otherwise what the describer reads."""
        from pixelchat.imagefiles import read_record

        record = read_record(image)
        spec = _record_spec(record, self.schema) if self._record_latent(record) is not None else None
        return _observable(spec.values, self.schema) if spec is not None else self.describe(image).attributes

    def source(self, image: Image.Image, source_prompt: str | None = None) -> Source:
        """The latent and spec a picture comes from: its record when this model drew it, otherwise the
        describer's reading of it, with a latent found by inversion under that spec."""
        from pixelchat.imagefiles import read_record

        record = read_record(image)
        latent = self._record_latent(record)
        spec = _record_spec(record, self.schema) if latent is not None else None
        if spec is not None:
            return Source(latent[None], source_prompt or record.get("prompt") or "", self.spec_tensor([spec]), "record",
                          None, spec)
        from pixelchat.vision.inversion import invert

        d = self.describe(image)
        seen = complete_spec(d.attributes, self.schema, seed=0, confidence=d.confidence)
        spec = SceneSpec(seen.values, {k: SEEN if k in d.attributes else FILLED for k in self.schema}, seen.confidence)
        cond = self.spec_tensor([spec])
        with torch.inference_mode(False):
            inv = invert(self.generator, self.image_tensor(image), cond)
        return Source(inv.z, source_prompt or d.prompt, cond, "inversion", inv, spec, d.familiar)

    def redraw(self, z: torch.Tensor, spec: torch.Tensor, fine_text=None) -> torch.Tensor:
        with torch.inference_mode():
            return self.draw(z, spec.expand(len(z), -1).contiguous())

    def edit(self, image: Image.Image, prompt: str, *, mask=None, strength: float = 0.0, n: int = 1,
             seed: int | None = None, target: dict[str, str] | None = None, changes: dict[str, str] | None = None,
             source_prompt: str | None = None, candidates: int | None = None, keep: str = "auto",
             size: int | None = None, **options) -> list[GeneratedImage]:
        """Redraw ``image`` with the spec changed as asked, z and every other value kept.

        changes: the values asked for (default: what ``prompt`` says that differs from the picture's
        spec; ``target`` — the whole desired picture, as the text GAN takes it — only where ``changes``
        is not given). strength and candidates: with one candidate and strength 0 (the default) the
        picture is redrawn from its own latent; otherwise ``candidates`` latents (the picture's own
        first, then ones moving up to ``strength`` away from it, 0.35 where strength is 0; default 16)
        are redrawn and the ones the describer reads closest to the new spec, and nearest to the
        picture, are kept (what a self-check asks for on a retry). mask: (H, W) in [0, 1], 1 where
        it may change; without one, a picture from elsewhere (inverted) keeps its own pixels wherever
        the redraw under the new spec differs little from the redraw under its old one (``keep="off"``:
        the whole redraw). size: the side of the result (default: the picture's own where the model draws
        it); the picture is edited at the model's size and upscaled, and keeps its own full-resolution
        pixels outside the mask."""
        if options:
            raise UnsupportedOperation(f"unknown edit option(s): {', '.join(sorted(options))}")
        self.check_inputs(GenerateRequest(prompt=prompt, n=n, seed=seed))
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        if keep not in ("auto", "off"):
            raise ValueError(f"keep must be auto or off, got {keep!r}")
        if candidates is not None and not 1 <= candidates <= 256:
            raise ValueError(f"candidates must be between 1 and 256, got {candidates}")
        out_size = self.output_size(image, size)
        self.check_mask(mask, image, out_size)
        from pixelchat.vision.editing import blend, candidate_latents, change_mask, feather, mask_tensor

        src = self.source(image, source_prompt)
        if changes is None:
            said = self.read([prompt])[0][0] if target is None else target
            changes = {k: v for k, v in said.items() if src.spec.values.get(k) != v}
        try:
            check_values(changes, self.schema)
            new = src.spec.with_values(changes)
            new = repair_spec(new, changes, self.schema)
            check_values(new.values, self.schema, complete=True)
        except SpecError as e:
            raise ValueError(f"cannot make that change: {e}") from None
        x0 = self.image_tensor(image)
        user_mask = None if mask is None else feather(mask_tensor(mask, self.model_cfg.size), 1.0)
        cond = self.spec_tensor([new])
        base = seed if seed is not None else secrets.randbelow(2**32)
        k = max(n, candidates or (16 if strength > 0 else 1))
        spread = strength if strength > 0 else (DEFAULT_SPREAD if k > 1 else 0.0)
        zs = candidate_latents(src.z[0], spread, k, torch.Generator().manual_seed(base))
        images = self.redraw(zs, cond)
        changed = None  # where an inverted picture's redraw changed under the new spec
        if user_mask is not None:
            images = blend(images, x0, user_mask)
        elif src.how == "inversion" and keep == "auto":
            old = self.redraw(src.z, src.text)  # the picture as the generator redraws it under its old spec
            changed = change_mask(images, old.expand(len(images), -1, -1, -1))
            images = blend(images, x0, changed)
        order = self._rank(images, _observable(new.values, self.schema), x0)[:n] if k > 1 else torch.arange(n)
        images, zs = images[order], zs[order]
        images = self.at_size(images, out_size, image, mask, None if changed is None else changed[order])
        return self._spec_results(images, zs, prompt, base, "edit", src, new, size=out_size, strength=strength,
                                  mask=mask is not None, changes=dict(changes))

    def vary(self, image: Image.Image, *, strength: float = 0.5, n: int = 4, seed: int | None = None,
             size: int | None = None, **options) -> list[GeneratedImage]:
        """``n`` variations: the same spec, the latent moved by ``strength``, at ``size`` (default: the picture's
        own where the model draws it). A variation that loses something the picture shows (by the checker)
        is drawn again with the latent moved another way, as new pictures are (`self_check`)."""
        self.check_vary(options, n, strength, seed)
        out_size = self.output_size(image, size)
        src = self.source(image)
        base = seed if seed is not None else secrets.randbelow(2**32)
        gen = torch.Generator().manual_seed(base)
        theta = strength * math.pi / 2
        zs = math.cos(theta) * src.z + math.sin(theta) * torch.randn((n, self.model_cfg.z_dim), generator=gen)
        images = self.redraw(zs, src.text)
        # a variation keeps what the picture shows: what its spec says (for a picture from elsewhere, what the
        # describer saw), checked as new pictures are; a miss moves the latent another way
        shown = {k: v for k, v in _observable(src.spec.values, self.schema).items()
                 if src.how == "record" or src.spec.source.get(k) != FILLED} if is_scenes(self.schema) else {}

        def propose(i: int, attempt: int) -> tuple[torch.Tensor, SceneSpec]:
            noise = torch.randn(self.model_cfg.z_dim, generator=torch.Generator().manual_seed(attempt_seed(base + i, attempt)))
            return math.cos(theta) * src.z[0] + math.sin(theta) * noise, src.spec

        images, zs, _, checks = self._checked(images, zs, [src.spec] * n, [shown] * n, [self.default_attempts] * n,
                                              propose, key="keeps_what_it_showed")
        images = self.upscale(images, out_size)
        details = {"check": checks} if any(c is not None for c in checks) else {}
        return self._spec_results(images, zs, src.prompt, base, "vary", src, src.spec, size=out_size, strength=strength,
                                  **details)

    def _spec_results(self, images: torch.Tensor, zs: torch.Tensor, prompt: str, seed: int, operation: str,
                      src: Source, spec: SceneSpec, size: int | None = None, **details) -> list[GeneratedImage]:
        out = self._results(images, zs, prompt or _spec_prompt(spec, self.schema), seed, operation, src, size=size,
                            **details)
        for r in out:
            r.record["spec"] = spec.to_dict()
        return out


def _observable(values: dict[str, str], schema) -> dict[str, str]:
    if not is_scenes(schema):
        return dict(values)
    from pixelchat.data.scenes import observable

    shown = observable(values)
    if shown.get("water") == "none":
        shown.pop("boat", None)
    return shown


def _spec_prompt(spec: SceneSpec, schema) -> str:
    if is_scenes(schema):
        from pixelchat.data.captions import scene_prompt

        return scene_prompt(_observable(spec.values, schema))
    return ", ".join(spec.values.values())


def repair_spec(spec: SceneSpec, asked: dict[str, str], schema) -> SceneSpec:
    """What an asked change forces on the rest of a scenes spec: the moon needs night, night has no sun,
    a boat needs water, no water holds no boat; the forced values are marked as said."""
    if not is_scenes(schema):
        return spec
    v, forced = dict(spec.values), {}
    if asked.get("celestial") == "moon" and v["time"] != "night":
        forced["time"] = "night"
    if asked.get("celestial") == "sun" and v["time"] == "night":
        forced["time"] = "day"
    time = forced.get("time", v["time"])
    if "celestial" not in asked and ((time == "night" and v["celestial"] == "sun")
                                     or (time != "night" and v["celestial"] == "moon")):
        forced["celestial"] = "moon" if time == "night" else "sun"
    if asked.get("boat") == "yes" and v["water"] == "none":
        forced["water"] = "lake"
    if asked.get("water") == "none" and v["boat"] == "yes":
        forced["boat"] = "no"
    return spec.with_values(forced) if forced else spec


def _record_spec(record: dict | None, schema) -> SceneSpec | None:
    try:
        return SceneSpec.from_dict(record["spec"], schema)
    except (KeyError, TypeError, SpecError):
        return None


def match_classes(prompt: str, schema: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, float]]:
    """A one-attribute schema (class folders, CIFAR, MNIST, digits): the class whose name the prompt
    says as a word (the longest, where several match); nothing said otherwise."""
    import re

    low = " ".join(re.sub(r"[^a-z0-9]+", " ", prompt.lower()).split())
    said, confidence = {}, {}
    for name, values in schema.items():
        hits = [v for v in values if re.search(rf"\b{re.escape(' '.join(re.sub(r'[^a-z0-9]+', ' ', v.lower()).split()))}\b", low)]
        if hits:
            said[name], confidence[name] = max(hits, key=len), 1.0
    return said, confidence

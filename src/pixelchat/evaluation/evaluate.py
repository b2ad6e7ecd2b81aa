"""`pixelchat evaluate`: generate from a prompt file, judge the pictures, compare with real renders."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import track

from pixelchat.data.dataset import pil_to_uint8
from pixelchat.data.scenes import SCHEMA, render_scene, sample_attributes
from pixelchat.engines import load_engine
from pixelchat.engines.base import MAX_IMAGES, GenerateRequest
from pixelchat.evaluation import metrics
from pixelchat.evaluation.judge import DEFAULT_JUDGE, judge_images, load_judge
from pixelchat.evaluation.prompts import EvalPrompt, complete_attributes

FEATURES = ("judge", "inception")
# Seeds of the real reference renders (far from the generator's and the judge's training seeds).
REFERENCE_SEED = 70_000_000


class EvaluationError(RuntimeError):
    """An evaluation that cannot run as asked (e.g. Inception features offline)."""


@dataclass
class Evaluation:
    figures: dict  # every headline figure, JSON-ready
    prompts: list[EvalPrompt]
    fake: torch.Tensor  # (P·K, 3, H, W) uint8, grouped by prompt
    real: torch.Tensor  # likewise, real renders of the same prompts
    fake_predictions: list[dict] = field(default_factory=list)
    real_predictions: list[dict] = field(default_factory=list)


class InceptionFeatures(torch.nn.Module):
    """torchmetrics' FID Inception-v3 (2048-d pool features); its weights come from the network once."""

    def __init__(self):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
        except Exception as e:  # missing torch-fidelity, no network, a failed download
            raise EvaluationError(
                "Inception features need the torch-fidelity package and the FID Inception weights, which are "
                f"downloaded on first use ({type(e).__name__}: {e}); install them with network access "
                "(pip install torch-fidelity) or use --feature judge") from None

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """uint8 (N, 3, H, W) → (N, 2048)."""
        return torch.cat([self.net(images[i:i + batch_size]).reshape(-1, 2048).float()
                          for i in range(0, len(images), batch_size)])


def to_batch(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([pil_to_uint8(im) for im in images])


def generate_for(engine, prompts: list[EvalPrompt], per_prompt: int, seed: int, progress: bool,
                 attempts: int | None = None) -> torch.Tensor:
    """``per_prompt`` pictures per prompt; prompt i uses seeds seed + i·per_prompt … attempts: a spec model's
    draws per picture at most while its self-check finds a said value missing (None: its default)."""
    batches = []
    for i, p in enumerate(track(prompts, description="generating", transient=True, disable=not progress)):
        out = engine.generate(GenerateRequest(p.prompt, n=per_prompt, seed=seed + i * per_prompt, size=engine.info.size,
                                              attempts=attempts))
        batches.append(to_batch([g.image for g in out]))
    return torch.cat(batches)


def render_for(prompts: list[EvalPrompt], per_prompt: int, size: int, progress: bool) -> tuple[torch.Tensor, list[dict]]:
    """Real renders of each prompt: its named attributes fixed, the rest drawn at random."""
    images, truth = [], []
    for i, p in enumerate(track(prompts, description="rendering references", transient=True, disable=not progress)):
        for j in range(per_prompt):
            seed = REFERENCE_SEED + i * per_prompt + j
            rng = np.random.default_rng([seed, 0])
            attrs = complete_attributes(p.attributes, rng) if p.attributes else sample_attributes(rng)
            images.append(pil_to_uint8(render_scene(attrs, size, seed)))
            truth.append(attrs)
    return torch.stack(images), truth


def evaluate(prompts: list[EvalPrompt], *, model: str | Path | None = None, per_prompt: int = 8, seed: int = 0,
             feature: str = "judge", judge_path: str | Path | None = None, progress: bool = True,
             console: Console | None = None, attempts: int | None = None) -> Evaluation:
    """Every figure for one model on one prompt set (see the module docs of `metrics`). attempts: a spec
    model's self-check (1: the generator's first draw of each picture, as it is; None: the default)."""
    console = console or Console(stderr=True)
    if not 2 <= per_prompt <= MAX_IMAGES:
        raise ValueError(f"n-per-prompt must be between 2 and {MAX_IMAGES}, got {per_prompt}")
    if len(prompts) * per_prompt <= 5:
        raise ValueError("too few images to compare: use more prompts or a larger n-per-prompt")
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    t0 = time.time()
    judge = load_judge(judge_path)
    inception = InceptionFeatures() if feature == "inception" else None
    engine = load_engine(model)
    size = engine.info.size
    if size not in (16, 32, 64, 128, 256):
        raise ValueError(f"model draws {size} px pictures; scenes references exist at 16–256 px")

    fake = generate_for(engine, prompts, per_prompt, seed, progress, attempts)
    real, _ = render_for(prompts, per_prompt, size, progress)
    with console.status("judging"):
        fake_pred, f_fake = judge_images(judge, fake)
        real_pred, f_real = judge_images(judge, real)
        fake_pred, real_pred = [p.attributes for p in fake_pred], [p.attributes for p in real_pred]
        if inception is not None:
            f_fake, f_real = inception(fake), inception(real)

    figures: dict = {"model": {"id": engine.info.id, "sha256": engine.info.sha256, "path": engine.info.path},
                     "judge": str(judge_path or DEFAULT_JUDGE), "feature": feature, "prompts": len(prompts),
                     "n_per_prompt": per_prompt, "images": len(fake), "seed": seed, "attempts": attempts}
    targets = [p.attributes for p in prompts for _ in range(per_prompt)]
    if any(p.attributes for p in prompts):
        gen = metrics.adherence(fake_pred, targets)
        ceiling = metrics.adherence(real_pred, targets)
        figures |= {"adherence": gen.adherence, "exact_match": gen.exact_match, "per_attribute": gen.per_attribute,
                    "attribute_counts": gen.counts}
        if sum(1 for p in prompts if p.attributes) >= 2:
            floor = metrics.shuffled_floor(fake_pred, [p.attributes for p in prompts], per_prompt,
                                           np.random.default_rng(seed))
            figures["shuffled_floor"] = {"adherence": floor.adherence, "exact_match": floor.exact_match,
                                         "per_attribute": floor.per_attribute}
        figures["real_ceiling"] = {"adherence": ceiling.adherence, "exact_match": ceiling.exact_match,
                                   "per_attribute": ceiling.per_attribute}
    with console.status("fidelity"):
        figures |= metrics.fd_kid(f_real, f_fake)
        figures |= metrics.prdc(f_real, f_fake, k=5)
        groups = lambda f: list(f.split(per_prompt))  # noqa: E731
        figures["diversity"] = metrics.diversity(groups(f_fake), groups(f_real))
    figures["seconds"] = round(time.time() - t0, 1)
    return Evaluation(_rounded(figures), prompts, fake, real, fake_pred, real_pred)


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


# --- the report ------------------------------------------------------------------------------


def write_report(ev: Evaluation, out: str | Path, grid_prompts: int = 12) -> Path:
    """A Markdown report with a per-attribute plot and sample grids (generated beside real renders)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    f = ev.figures
    lines = [f"# Evaluation of {f['model']['id']}", "",
             f"{f['prompts']} prompts × {f['n_per_prompt']} images (seed {f['seed']}), features: {f['feature']}; "
             f"model sha256 `{f['model']['sha256'][:16]}`.", "", "| figure | value |", "|---|---|"]
    for key in ("adherence", "exact_match", "fd", "kid", "precision", "recall", "density", "coverage"):
        if key in f:
            lines.append(f"| {key} | {f[key]} |")
    for key in ("shuffled_floor", "real_ceiling"):
        if key in f:
            lines.append(f"| {key} adherence / exact match | {f[key]['adherence']} / {f[key]['exact_match']} |")
    d = f["diversity"]
    lines += [f"| within-prompt distance (generated / real) | {d['mean_pairwise']} / {d['real_mean_pairwise']} |",
              f"| near-duplicate pairs | {d['near_duplicates']} |", ""]
    if "per_attribute" in f:
        names = [n for n in SCHEMA if n in f["per_attribute"]]
        lines += ["## Per attribute", "", "| attribute | generated | real renders | shuffled | scored |",
                  "|---|---|---|---|---|"]
        for n in names:
            lines.append(f"| {n} | {f['per_attribute'][n]} | {f['real_ceiling']['per_attribute'].get(n, '')} | "
                         f"{f.get('shuffled_floor', {}).get('per_attribute', {}).get(n, '')} | "
                         f"{f['attribute_counts'][n]} |")
        fig, ax = plt.subplots(figsize=(9, 3.5))
        x = np.arange(len(names))
        for k, (label, src) in enumerate((("generated", f["per_attribute"]),
                                          ("real renders", f["real_ceiling"]["per_attribute"]),
                                          ("shuffled prompts", f.get("shuffled_floor", {}).get("per_attribute", {})))):
            ax.bar(x + (k - 1) * 0.27, [src.get(n, 0) for n in names], 0.27, label=label)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("judge accuracy")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "per_attribute.png", dpi=110)
        plt.close(fig)
        lines += ["", "![per-attribute accuracy](per_attribute.png)", ""]
    lines += ["## Samples", "", "Each row: a prompt's generated pictures, then real renders of the same prompt.", ""]
    k = f["n_per_prompt"]
    for i, p in enumerate(ev.prompts[:grid_prompts]):
        rows = torch.cat([ev.fake[i * k:(i + 1) * k], ev.real[i * k:(i + 1) * k]])
        name = f"sample-{i:03d}.png"
        _grid(rows, 2 * k).save(out / name)
        named = ", ".join(f"{a}={v}" for a, v in p.attributes.items()) or "no attributes"
        lines += [f"**{i + 1}.** {p.prompt} ({named})", "", f"![{p.prompt}]({name})", ""]
    (out / "figures.json").write_text(json.dumps(f, indent=2) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _grid(images: torch.Tensor, ncol: int, scale: int = 2) -> Image.Image:
    n, _, h, w = images.shape
    rows = math.ceil(n / ncol)
    canvas = torch.full((3, rows * (h + 2), ncol * (w + 2)), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[:, r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[i]
    im = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)

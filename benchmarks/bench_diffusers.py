"""What one diffusion image costs next to one of ours, in the same run on the same machine.

A Stable-Diffusion-1.5-sized pipeline is built from configs with random weights (the cost of a
step does not depend on the weights): SD 1.5's UNet (block_out_channels 320/640/1280/1280,
cross-attention 768, 4 latent channels), its VAE and a CLIP ViT-L/14-sized text encoder. One
512×512 image with ONE denoising step (text encoding, one UNet step with classifier-free guidance,
so a batch of 2, as the pipeline runs it by default, and the VAE decode) goes through our
`DiffusersEngine`, against the shipped GAN drawing one image through its engine. A real SD 1.5
image takes 20–50 such steps; the step time is printed so that can be multiplied out.

The GAN is timed with torch's threads and with one thread: its small kernels stall when other
processes share the cores (torch's worker threads wait on each other), a single thread does not.
The ratio uses the GAN's faster figure. The load average is printed with the figures.

    python benchmarks/bench_diffusers.py [--repeats 3] [--json out.json]

Needs about 6 GB of memory. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _machine import machine
from pixelchat.engines import GenerateRequest, load_engine


def sd15_sized_pipeline():
    """StableDiffusionPipeline with SD 1.5's shapes and random weights; a small word-level tokenizer
    (prompts are padded to CLIP's 77 tokens, so the text encoder does its full work)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(  # CLIP ViT-L/14's text tower
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768))
    words = "a photo of an astronaut riding horse on the moon mountain lake at sunset".split()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [w + "</w>" for w in words] + [c + e for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>")]:
        vocab.setdefault(token, len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timed(fn, repeats: int) -> list[float]:
    """Seconds per call: one warm-up call, then ``repeats`` timed ones."""
    fn(0)
    out = []
    for i in range(1, repeats + 1):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def gan_times(gan, threads: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per GAN image on ``threads`` threads: a new prompt each time (the text encoder runs, as
    it does for diffusion), and one prompt (its embedding cached)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cold = timed(lambda i: gan.generate(GenerateRequest(f"a lake at sunset {threads} {i}", seed=i)), repeats)
        warm = timed(lambda i: gan.generate(GenerateRequest("a lake at sunset", seed=i)), repeats)
    finally:
        torch.set_num_threads(before)
    return cold, warm


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the diffusion image")
    parser.add_argument("--gan-repeats", type=int, default=50, help="timed runs of the GAN image")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from pixelchat.engines.diffusers import DiffusersEngine, quiet

    print(f"machine: {machine()}")
    load_before = os.getloadavg()
    gan = load_engine()
    with quiet():
        pipe = sd15_sized_pipeline()
    sd = DiffusersEngine(pipe, name="sd15-sized-random", path="(in memory)", sha256="", steps=1)

    threads = torch.get_num_threads()
    gan_runs = {n: gan_times(gan, n, args.gan_repeats) for n in dict.fromkeys((threads, 1))}
    # one diffusion image: text encoding, one UNet step (guided: batch 2), VAE decode
    sd_image = timed(lambda i: sd.generate(GenerateRequest(f"a lake at sunset {i}", seed=i, size=args.size)),
                     args.repeats)
    latents = torch.randn(2, 4, args.size // 8, args.size // 8)
    text = torch.randn(2, 77, 768)
    with torch.inference_mode():
        unet_step = timed(lambda i: pipe.unet(latents, 999, encoder_hidden_states=text), args.repeats)

    counts = {"unet": params(pipe.unet), "vae": params(pipe.vae), "vae_decoder": params(pipe.vae.decoder),
              "text_encoder": params(pipe.text_encoder)}
    counts["total"] = counts["unet"] + counts["vae"] + counts["text_encoder"]
    gan_counts = {"generator": params(gan.generator), "text_encoder": params(gan.encoder.model)}
    gan_counts["total"] = gan_counts["generator"] + gan_counts["text_encoder"]
    gan_ms = {f"{n}_threads": {"text_cold": statistics.median(c) * 1000, "text_warm": statistics.median(w) * 1000}
              for n, (c, w) in gan_runs.items()}
    best_cold = min(v["text_cold"] for v in gan_ms.values())
    best_warm = min(v["text_warm"] for v in gan_ms.values())
    d = {"pipeline": "StableDiffusionPipeline, SD 1.5 shapes, random weights", "size": args.size, "steps": 1,
         "guidance": sd.guidance, "threads": threads, "median_s": statistics.median(sd_image), "runs_s": sd_image,
         "unet_step_median_s": statistics.median(unet_step), "params": counts}
    out = {"machine": machine(), "load_average": {"start": load_before, "end": os.getloadavg()}, "diffusion": d,
           "gan": {"model": gan.info.id, "size": gan.info.size, "median_ms": gan_ms, "params": gan_counts},
           "ratio_text_cold": d["median_s"] * 1000 / best_cold, "ratio_text_warm": d["median_s"] * 1000 / best_warm}
    print(f"load average (1, 5, 15 min): start {', '.join(f'{x:.1f}' for x in load_before)}, "
          f"end {', '.join(f'{x:.1f}' for x in out['load_average']['end'])}")
    print(f"diffusion, {args.size}px, 1 step, guidance {sd.guidance}, {threads} threads: median {d['median_s']:.2f} s "
          f"(runs {', '.join(f'{s:.2f}' for s in sd_image)}); one guided UNet step alone "
          f"{d['unet_step_median_s']:.2f} s")
    print(f"  parameters: UNet {counts['unet'] / 1e6:.0f} M, VAE {counts['vae'] / 1e6:.1f} M (decoder "
          f"{counts['vae_decoder'] / 1e6:.1f} M), text encoder {counts['text_encoder'] / 1e6:.0f} M, "
          f"total {counts['total'] / 1e6:.0f} M")
    for n, v in gan_ms.items():
        print(f"GAN {gan.info.id}, {gan.info.size}px, {n.replace('_', ' ')}: median {v['text_cold']:.1f} ms with the "
              f"text encoder running, {v['text_warm']:.1f} ms with its text cached")
    print(f"  parameters: generator {gan_counts['generator'] / 1e6:.2f} M, text encoder "
          f"{gan_counts['text_encoder'] / 1e6:.1f} M, total {gan_counts['total'] / 1e6:.1f} M")
    print(f"one diffusion image with one step costs {out['ratio_text_cold']:.0f}× a GAN image (text encoded each "
          f"time), {out['ratio_text_warm']:.0f}× one with cached text")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

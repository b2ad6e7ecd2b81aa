"""Training throughput (images/s) of the text GAN (the shipped configuration) and of the seed's
DCGAN at 64×64, in fp32 and with bf16 autocast. Prints figures; asserts nothing."""

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from _machine import machine
from pixelchat.data import load_captioned_images
from pixelchat.models import ModelConfig
from pixelchat.text.encoder import load_text_encoder
from pixelchat.training.loop import preset, training_loop

SHIPPED = {"ngf": 12, "ndf": 8}


def throughput(arch: str, bf16: bool, steps: int, batch: int, data, encoder) -> float:
    model_cfg, cfg = preset(arch)
    if arch == "textgan":
        model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), **SHIPPED})
    cfg = replace(cfg, steps=steps, batch_size=batch, bf16=bf16, log_every=1, sample_every=10**9,
                  checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as out:
        training_loop(model_cfg, cfg, out, data=data, encoder=encoder)
        rows = [json.loads(line) for line in (Path(out) / "stats.jsonl").read_text().splitlines()]
    rows = rows[1:] or rows  # the first step includes warm-up
    return sum(r["img_per_s"] for r in rows) / len(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bf16-steps", type=int, default=3, help="bf16 is slow on CPUs without bf16 instructions")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    data = load_captioned_images("scenes", 64, scenes=256, captions_per_image=1, progress=False)
    encoder = load_text_encoder()
    for arch in ("textgan", "dcgan"):
        for bf16 in (False, True):
            rate = throughput(arch, bf16, args.bf16_steps if bf16 else args.steps, args.batch, data, encoder)
            print(f"{arch:8s} 64px batch {args.batch} {'bf16' if bf16 else 'fp32'}: {rate:.1f} img/s")


if __name__ == "__main__":
    main()

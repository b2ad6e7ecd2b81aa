"""int8 for the built-in networks: ONNX Runtime's static quantization against fp32, on this machine.

The generator and the upsampler (×4) are exported to ONNX as the ``onnx`` runtime exports them,
then quantized as the int8 runtime quantizes them (`quantized_onnx`: QDQ, per-channel int8 weights,
uint8 activations) calibrated on ``--calibrate`` inputs the engine draws from random specs. For
each network and each of fp32 PyTorch (eager), fp32 ONNX Runtime and int8 ONNX Runtime: one input's
latency p50 over ``--repeats`` calls, batched pictures/s (``--batch`` a call), the largest 8-bit
difference from eager and the PSNR against eager over ``--n`` held-out inputs, and the judge's
agreement: the share of attributes the judge reads the same in the int8 pictures as in eager's.

    python bench_int8.py --n 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _machine import machine

from pixelchat.data.spec import complete_spec
from pixelchat.engines import load_engine
from pixelchat.engines.runtime import Scaled, _OnnxRunner, export_onnx, quantized_onnx


def inputs(engine, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and random specs (completed from the prior) for ``seeds``."""
    specs = [complete_spec({}, engine.schema, s) for s in seeds]
    return engine.prepare_latents(seeds, None), engine.spec_tensor(specs)


def at64(pictures: torch.Tensor) -> torch.Tensor:
    """8-bit pictures box-downscaled to the judge's 64 px."""
    f = pictures.shape[-1] // 64
    return pictures if f == 1 else torch.nn.functional.avg_pool2d(pictures.float(), f).round().to(torch.uint8)


def to8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def timings(fn, single: tuple[torch.Tensor, ...], batched: tuple[torch.Tensor, ...], repeats: int) -> dict:
    with torch.inference_mode():
        fn(*single), fn(*batched)
        lat = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*single)
            lat.append((time.perf_counter() - t) * 1000)
        t, calls = time.perf_counter(), 0
        while time.perf_counter() - t < 3 or calls < 2:
            fn(*batched)
            calls += 1
        rate = calls * len(batched[0]) / (time.perf_counter() - t)
    return {"p50_ms": round(statistics.median(lat), 2), "pictures_per_s": round(rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256, help="held-out inputs for the differences and the judge")
    ap.add_argument("--calibrate", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import onnxruntime.quantization  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        print("int8 needs ONNX Runtime and the ONNX exporter: pip install 'pixelchat[onnx]'; skipped")
        return
    from pixelchat.evaluation.judge import load_judge, predict

    engine = load_engine(runtime="eager")
    judge = load_judge()
    up = Scaled(engine.upsampler, 4).eval()
    cal_z, cal_c = inputs(engine, list(range(10_000, 10_000 + args.calibrate)))
    z, c = inputs(engine, list(range(args.n)))
    with torch.inference_mode():
        small = engine.generator(z, c)  # eager's 64 px pictures: the upsampler's held-out inputs
        cal_small = engine.generator(cal_z, cal_c)
    nets = {  # name → (network, one input, held-out inputs, calibration rows, the engine's export cache key)
        "generator": (engine.generator, (z[:1], c[:1]), (z, c), [(a[None], b[None]) for a, b in zip(cal_z, cal_c)],
                      f"{engine.info.sha256[:16]}-generator"),
        "upsampler x4": (up, (small[:1],), (small,), [(a[None],) for a in cal_small],
                         f"{engine.info.upsampler['sha256'][:16]}-upsampler-x4"),
    }
    out = {"machine": machine(), "threads": torch.get_num_threads(), "n": args.n, "calibration": args.calibrate, "networks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (module, one, many, calibration, key) in nets.items():
            example = tuple(t[:1].expand(2, *t.shape[1:]).contiguous() for t in one)  # as the engine does
            fp32 = export_onnx(module, example, key)
            int8 = quantized_onnx(export_onnx(module, example, key, quantizable=True), lambda: calibration,
                                  Path(tmp) / f"{name.split()[0]}-int8.onnx")  # the runtime's settings
            threads = torch.get_num_threads()
            runners = {"eager fp32": module, "onnx fp32": _OnnxRunner(fp32, threads), "onnx int8": _OnnxRunner(int8, threads)}
            batch = tuple(t[:args.batch] for t in many)
            with torch.inference_mode():
                ref = to8(module(*many))
            ref_read = predict(judge, at64(ref))
            rows = {}
            for rname, fn in runners.items():
                with torch.inference_mode():
                    pics = to8(torch.cat([fn(*(t[i:i + 64] for t in many)) for i in range(0, len(many[0]), 64)]))
                diff = (pics.int() - ref.int()).abs()
                mse = float((diff.float() ** 2).mean())
                read = predict(judge, at64(pics))
                agree = float(np.mean([a.attributes.get(k) == b.attributes.get(k) for a, b in zip(read, ref_read)
                                       for k in engine.schema]))
                rows[rname] = {**timings(fn, one, batch, args.repeats), "max_diff": int(diff.max()),
                               "psnr_vs_eager_db": round(10 * np.log10(255 ** 2 / mse), 2) if mse > 0 else None,
                               "judge_agreement": round(agree, 4), "file_mb": round(
                                   (fp32 if rname == "onnx fp32" else int8).stat().st_size / 2 ** 20, 2) if rname != "eager fp32" else None}
            out["networks"][name] = rows
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}; {args.n} held-out inputs, {args.calibrate} for calibration")
    print("| network | runtime | one input p50 ms | pictures/s (batch) | max 8-bit diff vs eager | PSNR vs eager dB | judge agrees | ONNX file MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in out["networks"].items():
        for rname, r in rows.items():
            print(f"| {name} | {rname} | {r['p50_ms']} | {r['pictures_per_s']} | {r['max_diff']} | {r['psnr_vs_eager_db']} | "
                  f"{r['judge_agreement']:.3f} | {r['file_mb'] if r['file_mb'] is not None else '-'} |")


if __name__ == "__main__":
    main()

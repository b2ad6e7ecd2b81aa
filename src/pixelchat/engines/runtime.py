"""Inference runtimes for the built-in networks (the generator and the upsampler).

- ``eager``: PyTorch as it is (the default; every other runtime is compared against it);
- ``compile``: ``torch.compile`` (inductor, with the weights frozen into the graph);
- ``onnx``: the network exported with ``torch.onnx.export(dynamo=True)`` (dynamic batch) and run by
  ONNX Runtime's CPU execution provider (the ``onnx`` extra);
- ``openvino``: the same ONNX graph compiled by OpenVINO for the CPU, in fp32 (the ``openvino`` extra);
- ``int8``: the generator and the upsampler in 8-bit integers: their ONNX graphs quantized by ONNX
  Runtime's static quantization (QDQ, per-channel int8 weights, uint8 activations), calibrated on the
  engine's own inputs for fixed seeds, so that the quantized networks, and every picture they draw,
  are the same on every start. Not bit-exact with eager: about 36 dB from eager's pictures on the
  shipped model (benchmarks/RESULTS.md); the ``onnx`` extra. `pixelchat serve` uses it by default
  where that extra is installed.

Chosen per engine (``runtime=``), with ``PIXELCHAT_RUNTIME`` or ``--runtime``; the record of every
picture says which runtime drew it. Exported graphs are cached under ``PIXELCHAT_CACHE`` (default
``~/.cache/pixelchat``), keyed by the network's sha256, so only the first start pays for the export.
A runtime whose package is missing is one clear error naming the extra to install.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from collections.abc import Callable
from pathlib import Path

import torch

RUNTIMES = ("eager", "compile", "onnx", "openvino", "int8")
DEFAULT_RUNTIME = "eager"
EXTRA = {"onnx": ("onnx", ("onnxruntime", "onnxscript", "onnx")), "openvino": ("openvino", ("openvino", "onnxscript", "onnx")),
         "int8": ("onnx", ("onnxruntime", "onnxscript", "onnx"))}


class RuntimeUnavailable(ValueError):
    """The runtime's package is not installed."""


def runtime_name(name: str | None = None) -> str:
    """``name``, else ``PIXELCHAT_RUNTIME``, else the default; an unknown name is a ValueError."""
    chosen = (name or os.environ.get("PIXELCHAT_RUNTIME") or DEFAULT_RUNTIME).strip().lower()
    if chosen not in RUNTIMES:
        raise ValueError(f"unknown runtime {chosen!r}: choose one of {', '.join(RUNTIMES)}")
    return chosen


def check_available(name: str) -> None:
    """Raise RuntimeUnavailable (naming the extra) when the runtime's packages are missing."""
    if name not in EXTRA:
        return
    import importlib.util

    extra, modules = EXTRA[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeUnavailable(f"the {name} runtime needs {', '.join(missing)}: pip install 'pixelchat[{extra}]'")


def cache_dir() -> Path:
    return Path(os.environ.get("PIXELCHAT_CACHE") or Path.home() / ".cache" / "pixelchat").expanduser() / "runtime"


class Scaled(torch.nn.Module):
    """An upsampler at one scale, as a network of one input."""

    def __init__(self, net: torch.nn.Module, scale: int):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.upscale(x, self.scale)


def prepare(name: str, module: torch.nn.Module, example: tuple[torch.Tensor, ...], key: str,
            calibration: Callable[[], list[tuple[torch.Tensor, ...]]] | None = None) -> Callable[..., torch.Tensor]:
    """``module`` (eval mode, inputs batched on dim 0) run by runtime ``name``: a callable taking and
    returning tensors like the module. ``key`` names the network's weights in the export cache.
    ``calibration`` (int8): the inputs, one row each, that the quantization's ranges are measured on;
    a network without it stays eager under int8."""
    name = runtime_name(name)
    if name == "eager" or (name == "int8" and calibration is None):
        return module
    check_available(name)
    if name == "compile":
        # a batch size seen twice recompiles once with a symbolic batch (dynamic=None); dynamic=True fails
        # with freezing on the text GAN's generator
        return torch.compile(module, options={"freezing": True})
    threads = torch.get_num_threads()
    if name == "int8":
        return _OnnxRunner(quantized_onnx(export_onnx(module, example, key, quantizable=True), calibration), threads)
    path = export_onnx(module, example, key)
    if name == "onnx":
        return _OnnxRunner(path, threads)
    return _OpenVinoRunner(path, threads, [tuple(t.shape[1:]) for t in example])


_export_lock = threading.Lock()


def code_key(module: torch.nn.Module) -> str:
    """12 hex digits naming the code of ``module``: a hash of the source files of every class in it, so that
    a graph exported by an earlier version of a network's code is not taken for this version's."""
    import hashlib
    import inspect

    files = set()
    for m in module.modules():
        try:
            files.add(inspect.getsourcefile(type(m)))
        except TypeError:  # a class without a source file
            continue
    h = hashlib.sha256()
    for f in sorted(x for x in files if x):
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:12]


def export_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], key: str, *,
                quantizable: bool = False) -> Path:
    """The module as an ONNX file with a dynamic batch dimension (cached by ``key``, the network's code
    and torch's version). ``quantizable``: in the form int8 quantization handles best (generator blocks
    with their upsampling written out: `pixelchat.models.textgan.written_out_upsampling`)."""
    import onnxscript  # noqa: F401  (the dynamo exporter's dependency; a clear error above when missing)

    from pixelchat.models.textgan import written_out_upsampling

    form = "-q" if quantizable else ""
    path = cache_dir() / f"{key}{form}-{code_key(module)}-torch{torch.__version__.split('+')[0]}.onnx"
    with _export_lock:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = torch.export.Dim("batch", min=1, max=4096)
        import logging
        import warnings

        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), torch.no_grad(), written_out_upsampling() if quantizable else nullcontext():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(module, example, dynamo=True, verbose=False,
                                            dynamic_shapes=tuple({0: batch} for _ in example))
        finally:
            quiet.setLevel(level)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(program.model_proto.SerializeToString())
        os.replace(tmp, path)
    return path


def quantized_onnx(fp32: Path, calibration: Callable[[], list[tuple[torch.Tensor, ...]]], path: Path | None = None) -> Path:
    """The ONNX graph ``fp32`` quantized to int8 (cached beside it, by ONNX Runtime's version, or written to
    ``path``): static quantization, QDQ, per-channel int8 weights and uint8 activations, their ranges
    (min-max) measured on ``calibration()``'s rows. The same rows give the same file, so pictures stay
    reproducible."""
    import logging
    import tempfile

    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = path or fp32.with_name(f"{fp32.stem}-int8-ort{onnxruntime.__version__}.onnx")
    with _export_lock:
        if path.is_file():
            return path
        names = _OnnxRunner(fp32, 1).names
        rows = iter([dict(zip(names, (t.detach().contiguous().numpy() for t in row))) for row in calibration()])

        class Rows(CalibrationDataReader):
            def get_next(self):
                return next(rows, None)

        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the quantizer logs its advice on every call
        try:
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                quantize_static(str(pre), str(out), Rows(), quant_format=QuantFormat.QDQ, per_channel=True,
                                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
                os.replace(out, path)
        finally:
            quiet.setLevel(level)
    return path


class _OnnxRunner:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # its threads sleep when an op ends instead of spinning: spinning, they took the cores from torch's
        # threads between the networks (one 256 px picture 72 ms instead of 10 on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().contiguous().numpy() for n, t in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _OpenVinoRunner:
    def __init__(self, path: Path, threads: int, shapes: list[tuple[int, ...]]):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[i]: ov.PartialShape([-1, *s]) for i, s in enumerate(shapes)})
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        self._lock = threading.Lock()  # one infer request at a time per compiled model

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with self._lock:
            out = self.compiled([t.detach().contiguous().numpy() for t in inputs])[0]
        return torch.from_numpy(out.copy())

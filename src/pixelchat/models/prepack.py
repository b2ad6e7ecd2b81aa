"""Weights prepared once for inference: derived weights kept, and weights prepacked for a few pictures on the CPU.

Eager PyTorch hands each convolution's weight to oneDNN in the plain layout, and oneDNN reorders it
into its blocked layout on every call, and a matrix product's weight likewise.
In a batched pass that cost is shared by many pictures; for one picture it is a large part of the
pass (what it costs: benchmarks/bench_prepack.py). This module keeps, per layer and input shape, the
weight already reordered (what inductor's freezing and ONNX Runtime do), and uses it for batches of
at most `SMALL_BATCH` pictures while no gradient is needed. Larger batches, training, tracing and
export take the plain ``torch.nn.functional`` calls, as do builds of PyTorch without oneDNN and
``torch.backends.mkldnn.enabled = False``.

A packed weight is remembered by its owner (a module), a name and the input shape, and is packed
again when the weight tensor is another object or has changed in place (its version counter).
Same function as the plain calls; float rounding may differ (oneDNN picks kernels per shape).

`derived` keeps weights computed from others (a folded convolution, a batch norm folded into the
convolution before it) the same way, for any batch size, while no gradient is needed.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F

SMALL_BATCH = 4  # above it eager's per-call reorders are shared by enough pictures (bench_prepack.py)
enabled = True  # False: every layer takes the plain calls (for comparisons: bench_end_to_end.py --prepack both)

_PACKS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
_DERIVED: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


@functools.cache
def _kernels() -> bool:
    """Whether this build of PyTorch has oneDNN's prepacked convolutions and matrix products."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._convolution_pointwise.default is not None
                    and torch.ops.mkldnn._convolution_transpose_pointwise.default is not None
                    and torch.ops.mkldnn._linear_pointwise.default is not None)
    except (AttributeError, RuntimeError):
        return False


def inference() -> bool:
    """Whether weights may be prepared once and kept: no gradient to carry, and not being traced or exported."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def usable(x: torch.Tensor) -> bool:
    """Whether a layer applied to ``x`` runs with prepacked weights."""
    # inference() first: under tracing, reading the batch size would fix it in the traced graph
    return (enabled and inference() and x.shape[0] <= SMALL_BATCH and x.device.type == "cpu"
            and x.dtype == torch.float32 and torch.backends.mkldnn.enabled and _kernels())


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version  # an inference tensor has no version counter


def _kept(store, owner, slot, params: list[torch.Tensor], make):
    """``make()``, kept in ``store`` under (owner, slot) while ``params`` are the same tensors (weakly: a freed
    one never matches a new one at its address) at the same versions."""
    slots = store.get(owner)
    if slots is None:
        slots = store[owner] = {}
    hit = slots.get(slot)
    if hit is not None and len(hit[0]) == len(params) and all(
            r() is p and v == _version(p) for (r, v), p in zip(hit[0], params)):
        return hit[1]
    value = make()
    slots[slot] = ([(weakref.ref(p), _version(p)) for p in params], value)
    return value


def derived(owner, name: str, params: list[torch.Tensor], make):
    """``make()``, weights computed from ``params``: kept (per owner and name) while no gradient is needed and
    the params are unchanged, computed afresh otherwise (training, tracing, export)."""
    if not inference():
        return make()
    return _kept(_DERIVED, owner, name, params, make)


def _packed(owner, name: str, weight: torch.Tensor, shape: tuple[int, ...], pack):
    return _kept(_PACKS, owner, (name, shape), [weight], pack)


def packed_bytes() -> int:
    """The size of the packed weights kept now, all networks and input shapes (oneDNN's layouts may pad
    a little beyond this)."""
    return sum(v.numel() * v.element_size() for slots in list(_PACKS.values()) for _, v in list(slots.values()))


_ACTIVATIONS = {"none": lambda x: x, "swish": F.silu}  # oneDNN's names for what follows a convolution


def conv2d(owner, name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
           stride: int = 1, padding: int = 0, activation: str = "none") -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` then ``activation`` ("none" or "swish": SiLU); prepacked,
    the activation computed by the convolution, where `usable`."""
    if not usable(x):
        return _ACTIVATIONS[activation](F.conv2d(x, weight, bias, stride, padding))
    args = ([padding] * 2, [stride] * 2, [1, 1], 1)
    packed = _packed(owner, name, weight, tuple(x.shape),
                     lambda: torch.ops.mkldnn._reorder_convolution_weight(weight, *args, list(x.shape)))
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, *args, activation, [], "")


def conv_transpose2d(owner, name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                     stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride, padding)``; prepacked where `usable`."""
    if not usable(x):
        return F.conv_transpose2d(x, weight, bias, stride, padding)
    padding_, output_padding, stride_, dilation = [padding] * 2, [0, 0], [stride] * 2, [1, 1]
    packed = _packed(owner, name, weight, tuple(x.shape),
                     lambda: torch.ops.mkldnn._reorder_convolution_transpose_weight(
                         weight, padding_, output_padding, stride_, dilation, 1, list(x.shape)))
    return torch.ops.mkldnn._convolution_transpose_pointwise(x, packed, bias, padding_, output_padding, stride_,
                                                             dilation, 1, "none", [], "")


def linear(owner, name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for x (B, in); prepacked (oneDNN's; MKL's packed form was about as fast
    and four times the weight's size) where `usable`."""
    if x.dim() != 2 or not usable(x):
        return F.linear(x, weight, bias)
    batch = x.shape[0]
    packed = _packed(owner, name, weight, tuple(x.shape),
                     lambda: torch.ops.mkldnn._reorder_linear_weight(weight, batch))
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

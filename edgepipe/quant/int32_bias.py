"""The int32 bias rounding of the integer kernels, trained in eager QAT instead of added at export.

ONNX Runtime's QLinearConv/QGemm and OpenVINO's u8 x i8 convolutions take a layer's bias as int32 at scale
``input_scale * weight_scale[c]``; ``onnx_qdq._quantize_bias`` writes ``clip(round(b / s), int32)`` (round
half to even, float32 arithmetic). Eager QAT keeps biases float, so each rounded bias shifted a whole channel
by up to half an accumulator step the model never trained with: benchmarks/int8_agreement.md measured
agreement with torch falling from >= 99.96% to 99.42% at exactly that hop.

Here each QAT conv/linear fake-quantizes its bias the same way (straight-through gradient), with the live
scale of the fake-quant that produces its input. Which fake-quant that is, eager mode does not record: one
traced forward (eval, no grad, nothing observed) follows tensors from each fake-quant's output through the
layers that keep a quantization grid (the pooling, flatten and zero padding that the export carries Q/DQ
across) to the conv/linear that reads them. A layer whose input no fake-quant produces keeps a float bias,
as the export does. With BatchNorm frozen (or in eval) the fused Conv+BN runs the folded form
``conv(x, fq(w * g/s), fq_int32(b_folded))``, the export's arithmetic op for op; while BN still learns from
batch statistics, torch's own form runs and the folded bias's rounding error is added to its output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_BOUND = "_int32_bias_bound"


def fake_quantize_bias(
    bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """``bias`` on the int32 grid of scale input_scale x weight_scale (per output channel), as the export
    rounds it; the gradient passes straight through. The value is exactly ``q * scale`` in float32, the
    runtime's DequantizeLinear of the int32 bias."""
    scale = input_scale.detach().reshape(()).float() * weight_scale.detach().reshape(-1).float()
    q = torch.clamp(torch.round(bias.detach() / scale), INT32_MIN, INT32_MAX)
    return (q * scale) + (bias - bias.detach())


class Int32Bias(nn.Module):
    """Holds which fake-quant feeds its layer (not as a submodule: the state_dict is unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self._source: tuple[Any, ...] = ()

    @property
    def source(self) -> Any | None:
        return self._source[0] if self._source else None

    def bind(self, fake_quant: Any | None) -> None:
        self._source = () if fake_quant is None else (fake_quant,)

    def forward(self, bias: torch.Tensor | None, weight_fake_quant: Any) -> torch.Tensor | None:
        src = self.source
        if bias is None or src is None:
            return bias
        if not (src.fake_quant_enabled[0] and weight_fake_quant.fake_quant_enabled[0]):
            return bias  # fake-quant switched off: the float model, float bias included
        return fake_quantize_bias(bias, src.scale, weight_fake_quant.scale)

    def extra_repr(self) -> str:
        return "bound" if self._source else "unbound (float bias)"


def _fold(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """BN folded with its running statistics, op for op as qdq.fold_conv_bn (the same float32 values)."""
    bn = m.bn
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = m.weight * factor.reshape([-1] + [1] * (m.weight.dim() - 1))
    b0 = torch.zeros_like(bn.running_mean) if m.bias is None else m.bias
    return w, bn.bias + (b0 - bn.running_mean) * factor


def _conv_bn_forward(m: Any, x: torch.Tensor, relu: bool) -> torch.Tensor:
    if m.bn.training:  # BN learns from batch statistics: torch's form, plus the folded bias's rounding error
        y = m._forward(x)
        if m.int32_bias.source is not None:
            with torch.no_grad():
                _, b = _fold(m)
                delta = m.int32_bias(b, m.weight_fake_quant) - b
            y = y + delta.reshape(1, -1, *([1] * (y.dim() - 2)))
    else:
        w, b = _fold(m)
        y = m._conv_forward(x, m.weight_fake_quant(w), m.int32_bias(b, m.weight_fake_quant))
    return F.relu(y) if relu else y


def _conv_forward(m: Any, x: torch.Tensor, relu: bool) -> torch.Tensor:
    w = m.weight_fake_quant(m.weight)
    y = m._conv_forward(x, w, m.int32_bias(m.bias, m.weight_fake_quant))
    return F.relu(y) if relu else y


def _linear_forward(m: Any, x: torch.Tensor, relu: bool) -> torch.Tensor:
    w = m.weight_fake_quant(m.weight)
    y = F.linear(x, w, m.int32_bias(m.bias, m.weight_fake_quant))
    return F.relu(y) if relu else y


class _Forward:
    """A picklable, deep-copyable stand-in for a QAT layer's forward (module-level, no closures)."""

    def __init__(self, fn: Any, relu: bool):
        self.fn, self.relu = fn, relu

    def __call__(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        return self.fn(module, x, self.relu)


def _forward_for(module: Any) -> _Forward | None:
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.nn.qat as nnqat

    if isinstance(module, (nniqat.ConvBn1d, nniqat.ConvBn2d, nniqat.ConvBn3d)):
        relu = isinstance(module, (nniqat.ConvBnReLU1d, nniqat.ConvBnReLU2d, nniqat.ConvBnReLU3d))
        return _Forward(_conv_bn_forward, relu)
    if isinstance(module, (nnqat.Conv1d, nnqat.Conv2d, nnqat.Conv3d)):
        relu = isinstance(module, (nniqat.ConvReLU1d, nniqat.ConvReLU2d, nniqat.ConvReLU3d))
        return _Forward(_conv_forward, relu)
    if isinstance(module, nnqat.Linear):
        return _Forward(_linear_forward, isinstance(module, nniqat.LinearReLU))
    return None


class _BoundForward:
    def __init__(self, module: Any, impl: _Forward):
        self.module, self.impl = module, impl

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.impl(self.module, x)


def add_int32_biases(model: nn.Module) -> int:
    """Give every QAT conv/linear with a bias its Int32Bias (unbound until :func:`bind_int32_biases`);
    the model binds itself on its first forward. Returns the number of layers changed."""
    n = 0
    for module in model.modules():
        impl = _forward_for(module)
        if impl is None or module.bias is None and not hasattr(module, "bn"):
            continue
        module.int32_bias = Int32Bias()
        module.forward = _BoundForward(module, impl)
        n += 1
    model.register_forward_pre_hook(_bind_on_first_forward)
    return n


def _bind_on_first_forward(model: nn.Module, args: tuple) -> None:
    if model.__dict__.get(_BOUND) or not args or not isinstance(args[0], torch.Tensor):
        return
    bind_int32_biases(model, args[0][:1])


# Layers whose output keeps its input's quantization grid, and across which the export carries Q/DQ (pools,
# flatten, dropout in eval, identity, zero padding that is folded into the next conv).
_KEEPS_GRID = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    nn.ZeroPad2d,
)


def bind_int32_biases(model: nn.Module, example: torch.Tensor) -> dict[str, str | None]:
    """Find, by one traced forward of ``example``, the fake-quant that feeds each layer with an Int32Bias
    and bind it; nothing is observed or updated. Returns {layer: its input's fake-quant or None}."""

    from torch.ao.quantization import FakeQuantizeBase

    fqs = [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantizeBase)]
    names = {id(m): n for n, m in fqs}
    produced: dict[int, Any] = {}
    alive: list[torch.Tensor] = []  # kept so no later tensor can reuse a recorded address
    layers = {m: n for n, m in model.named_modules() if isinstance(getattr(m, "int32_bias", None), Int32Bias)}
    bound: dict[str, str | None] = {}

    def record(fq, _inputs, output):
        alive.append(output)
        produced[output.data_ptr()] = fq

    def carry(_module, inputs, output):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].data_ptr() in produced:
            alive.append(output)
            produced.setdefault(output.data_ptr(), produced[inputs[0].data_ptr()])

    def look_up(module, inputs):
        src = produced.get(inputs[0].data_ptr())
        module.int32_bias.bind(src)
        bound[layers[module]] = names.get(id(src)) if src is not None else None

    handles = [fq.register_forward_hook(record) for _, fq in fqs]
    handles += [
        m.register_forward_hook(carry)
        for m in model.modules()
        if (isinstance(m, _KEEPS_GRID) or getattr(type(m), "keeps_quantization_grid", False))
        and not hasattr(m, "activation_post_process")  # a pool with its own fake-quant is recorded by it
    ]
    handles += [m.register_forward_pre_hook(look_up) for m in layers]
    training = [(m, m.training) for m in model.modules()]
    # Nothing observed, nothing rounded: fake-quants pass their input through (an uncalibrated per-channel
    # weight fake-quant cannot even run), which is all the trace needs.
    states = [(fq, bool(fq.observer_enabled[0]), bool(fq.fake_quant_enabled[0])) for _, fq in fqs]
    model.__dict__[_BOUND] = True  # before the traced call: the first-forward hook must not recurse
    try:
        model.eval()
        for fq, _, _ in states:
            fq.disable_observer()
            fq.disable_fake_quant()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        for m, was in training:
            m.training = was
        for fq, observed, quantized in states:
            fq.enable_observer(observed)
            fq.enable_fake_quant(quantized)
    return bound


def quantized_bias(module: Any, bias: torch.Tensor | None) -> torch.Tensor | None:
    """``bias`` as ``module`` runs it (on the int32 grid when bound): what a QDQ copy carries to equal it."""
    ib = getattr(module, "int32_bias", None)
    if bias is None or not isinstance(ib, Int32Bias):
        return bias
    with torch.no_grad():
        return ib(bias, module.weight_fake_quant)

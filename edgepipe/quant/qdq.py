"""Turn a trained eager-QAT model into a float module whose ONNX export is a clean QDQ graph.

Why not ``torch.onnx.export`` of the QAT model as it is (measured 3.7x *slower* than FP32 in ONNX Runtime):
each fused Conv+BN exports as Conv, Div and BatchNormalization; scales come out as 1-element tensors, which
ONNX Runtime's QLinearAdd rejects; torch's default fused observer op has no ONNX export. Here, for each layer:

* Conv+BN(+ReLU): BatchNorm is folded into the weights *before* their per-channel fake-quantization, exactly
  as the QAT module computes in eval mode (``conv(x, fq(w * g/s)) + b - m * g/s``), so the INT8 graph has no
  BatchNormalization node and the folded weights are the ones that were trained;
* every activation fake-quant becomes ``fake_quantize_per_tensor_affine`` with Python scalars, which exports
  as QuantizeLinear/DequantizeLinear with scalar scale and zero-point.

No ``convert()`` and no quantized tensors: the result is an ordinary float module, numerically equal to the
QAT model in eval mode, that any ONNX exporter can trace.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgepipe.errors import ModelError
from edgepipe.quant.int32_bias import quantized_bias
from edgepipe.quant.qat import W_QMAX as INT8_MAX
from edgepipe.quant.qat import W_QMIN as INT8_MIN
from edgepipe.quant.qat import _tq, is_qat_conv, is_qat_linear


class QDQ(nn.Module):
    """Per-tensor quantize->dequantize with scalar parameters (exports as ONNX Q/DQ with scalar scales)."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int):
        super().__init__()
        self.scale, self.zero_point, self.qmin, self.qmax = (
            float(scale),
            int(zero_point),
            int(qmin),
            int(qmax),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, zero_point={self.zero_point}"


def _qdq_from(fq: Any) -> QDQ:
    return QDQ(float(fq.scale.reshape(-1)[0]), int(fq.zero_point.reshape(-1)[0]), fq.quant_min, fq.quant_max)


class _QDQWeight(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fq: Any):
        super().__init__()
        self.register_buffer("w_scale", fq.scale.detach().clone().float())
        self.register_buffer("w_zero_point", fq.zero_point.detach().clone().int())
        # the trained grid (qat.NUMERICS: 7 or 8 bits) rounds the stored weight; the graph's Q/DQ then spans
        # int8, the one signed range ONNX has, which leaves an on-grid 7-bit weight as it is
        self.qmin, self.qmax = int(fq.quant_min), int(fq.quant_max)
        # Stored on the int8 grid as torch rounded it: torch rounds w * (1/s), the ONNX cleanup w / s, which
        # differ at a channel's extreme (|w/s| = 127.5 exactly); re-rounding an on-grid value cannot differ.
        on_grid = torch.fake_quantize_per_channel_affine(
            weight.detach().float(), self.w_scale, self.w_zero_point, 0, self.qmin, self.qmax
        )
        self.weight = nn.Parameter(on_grid, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def qweight(self) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(
            self.weight, self.w_scale, self.w_zero_point, 0, INT8_MIN, INT8_MAX
        )


class QDQConv2d(_QDQWeight):
    def __init__(self, conv: nn.Conv2d, weight, bias, fq, relu: bool, out: QDQ | None):
        super().__init__(weight, bias, fq)
        self.stride, self.padding, self.dilation, self.groups = (
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )
        self.relu, self.out = relu, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.qweight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.relu:
            y = F.relu(y)
        return self.out(y) if self.out is not None else y


class QDQLinear(_QDQWeight):
    def __init__(self, weight, bias, fq, relu: bool, out: QDQ | None):
        super().__init__(weight, bias, fq)
        self.relu, self.out = relu, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.qweight(), self.bias)
        if self.relu:
            y = F.relu(y)
        return self.out(y) if self.out is not None else y


def fold_conv_bn(module: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Folded (weight, bias) of a QAT conv, BN folded with its running statistics."""
    w = module.weight.detach()
    b = None if module.bias is None else module.bias.detach()
    bn = getattr(module, "bn", None)
    if bn is None:
        return w, b
    std = torch.sqrt(bn.running_var + bn.eps)
    factor = bn.weight.detach() / std
    w = w * factor.reshape(-1, 1, 1, 1)
    b0 = torch.zeros_like(bn.running_mean) if b is None else b
    b = bn.bias.detach() + (b0 - bn.running_mean) * factor
    return w, b


class QDQCosineHead(nn.Module):
    """The trained cosine head (models/heads.py) as normalise -> Q/DQ -> MatMul(int8 constant) -> Q/DQ.

    The effective weight ``s * normalize(W)`` is computed once and stored transposed ([in, classes]), so the
    export is a plain MatMul whose weight input comes straight from a DequantizeLinear (ONNX Runtime then
    fuses DQ -> MatMul -> Q into an integer MatMul; a Transpose in between would keep it in float)."""

    def __init__(self, head: Any):
        super().__init__()
        self.inp = _qdq_from(head.input_quant.activation_post_process)
        grid = _qdq_from(head.weight_fake_quant)  # rounded on the trained grid, exported on int8's
        on_grid = grid(head.effective_weight().detach()).t().contiguous()
        self.weight = nn.Parameter(on_grid, requires_grad=False)
        self.w = QDQ(grid.scale, grid.zero_point, INT8_MIN, INT8_MAX)
        self.out = _qdq_from(head.output_quant.activation_post_process)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.matmul(self.inp(F.normalize(x, dim=1)), self.w(self.weight)))


def _replacement(module: Any) -> nn.Module | None:
    import torch.ao.nn.intrinsic.qat as nniqat

    tq = _tq()
    if hasattr(module, "effective_weight") and isinstance(getattr(module, "weight_fake_quant", None),
                                                           tq.FakeQuantizeBase):
        return QDQCosineHead(module)
    if not (is_qat_conv(module) or is_qat_linear(module)):
        return None
    app = getattr(module, "activation_post_process", None)  # an Identity: float output (float_output_qconfig)
    out = _qdq_from(app) if isinstance(app, tq.FakeQuantizeBase) else None
    if is_qat_conv(module):
        w, b = fold_conv_bn(module)
        b = quantized_bias(module, b)  # the int32-grid bias QAT runs (the export re-rounds it: the same)
        relu = isinstance(module, (nniqat.ConvBnReLU2d, nniqat.ConvReLU2d))
        return QDQConv2d(module, w, b, module.weight_fake_quant, relu, out)
    relu = isinstance(module, nniqat.LinearReLU)
    return QDQLinear(module.weight, quantized_bias(module, module.bias), module.weight_fake_quant, relu, out)


def to_qdq_module(qat_model: nn.Module) -> nn.Module:
    """A float copy of a trained QAT model with BN folded and scalar fake-quant: ready for ONNX export."""
    tq = _tq()
    model = copy.deepcopy(qat_model).eval()
    for name, module in list(model.named_modules()):
        new = _replacement(module)
        if new is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    # Remaining activation fake-quants (QuantStub, Hardswish, Hardsigmoid, FloatFunctional add/mul) are called
    # through prepare()'s forward hooks or FloatFunctional: swapping the child keeps those call sites.
    for module in list(model.modules()):
        if isinstance(module, tq.FakeQuantizeBase):
            continue
        app = getattr(module, "activation_post_process", None)
        if isinstance(app, tq.FakeQuantizeBase):
            module.activation_post_process = _qdq_from(app)
    leftovers = [n for n, m in model.named_modules() if isinstance(m, tq.FakeQuantizeBase)]
    if leftovers:
        raise ModelError(
            f"fake-quant modules left after QDQ conversion ({', '.join(leftovers[:3])}): a layer type the "
            "converter does not know; fix: use a registry arch, or teach quant/qdq.py that layer"
        )
    return model

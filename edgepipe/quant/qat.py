"""Eager-mode QAT with torch.ao.quantization: the ONE module that touches it.

torch's eager quantization is deprecated (torchao / PT2E are its successors) but still works in torch 2.15;
keeping every call here means a move to PT2E stays local. The ONNX path never calls ``convert()``: it reads
the trained fake-quant parameters (see qdq.py) and writes QDQ directly.
"""

from __future__ import annotations

import warnings
from typing import Any

from edgepipe.errors import ModelError

# Per-channel symmetric INT8 weights, per-tensor affine UINT8 activations (ONNX Runtime's U8S8 and OpenVINO's
# u8 x i8 kernels). The weights' range is the model's numerics (NUMERICS): what the targets' kernels compute.
ACT_QMIN, ACT_QMAX = 0, 255
W_QMIN, W_QMAX = -128, 127

# qat.numerics -> the weight grid QAT trains, and why:
# * s8: full 8-bit weights. Exact on AVX-512 VNNI / AVX-VNNI (vpdpbusd) and on ARM (sdot/udot, smull), but
#   x86 CPUs without VNNI (AVX2: Haswell to Zen 3) multiply u8 x s8 with vpmaddubsw, whose int16 sums of two
#   products saturate at 32767 (255 * 127 * 2 = 64770): the integers run there are not the trained ones.
# * s7: weights on [-64, 63] (ONNX Runtime's reduce_range), 255 * 64 * 2 = 32640 fits int16: the same
#   integers on every x86 and ARM kernel. QAT trains the 7-bit grid, so nothing is rounded after training.
# * u8u8: the s8 model with its weights written as uint8 (+128, zero point 128): bit-for-bit the same model,
#   which ONNX Runtime runs on its U8U8 kernels (16-bit products on AVX2, no saturation). Export-only.
NUMERICS = {"s8": (-128, 127), "s7": (-64, 63), "u8u8": (-128, 127)}
DEFAULT_NUMERICS = "s7"


def _tq():
    with warnings.catch_warnings():  # the deprecation notice is printed on every import; once is in the docs
        warnings.simplefilter("ignore")
        from torch.ao import quantization as tq
    return tq


def qat_qconfig():
    """Plain FakeQuantize (not the default fused moving-average op, which has no ONNX export)."""
    import torch

    tq = _tq()
    act = tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver,
        quant_min=ACT_QMIN,
        quant_max=ACT_QMAX,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
        reduce_range=False,
    )
    weight = tq.FakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver,
        quant_min=W_QMIN,
        quant_max=W_QMAX,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        reduce_range=False,
        ch_axis=0,
    )
    return tq.QConfig(activation=act, weight=weight)


def _observe_output(module: Any, _inputs: Any, output: Any) -> Any:
    return module.activation_post_process(output)


def _gated_hardswish_cls():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class GatedHardswish(nn.Module):
        """hardswish(x) = x * hardsigmoid(x) with the gate fake-quantized to 1/255 steps (0..255 -> 0..1).

        The integer runtimes have no int8 HardSwish kernel: ONNX Runtime runs the gate as a QLinearAdd whose
        uint8 output *is* this rounded gate, then a QLinearMul (see onnx_qdq.py). torch's own HardSwish keeps
        the gate in float, so a model trained with it is not the model the runtime runs (measured: ORT INT8
        agreed with torch on 99.2% of the test split). Training with the rounded gate makes them the same.
        """

        def __init__(self, activation_post_process: Any):
            super().__init__()
            self.activation_post_process = activation_post_process

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate = torch.fake_quantize_per_tensor_affine(F.hardsigmoid(x), 1.0 / 255, 0, 0, 255)
            return self.activation_post_process(x * gate)

    return GatedHardswish


def head_weight_fake_quant():
    """Per-tensor symmetric INT8 for a weight computed in forward (the cosine head's ``s * normalize(W)``):
    eager QAT has no module to swap in for it, and its rows all have norm s, so one scale fits every class."""
    import torch

    tq = _tq()
    return tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver,
        quant_min=W_QMIN,
        quant_max=W_QMAX,
        dtype=torch.qint8,
        qscheme=torch.per_tensor_symmetric,
        reduce_range=False,
    )()


def _quantize_like_the_runtime(model: Any) -> None:
    """Fake-quant where the integer runtimes quantize but eager QAT does not.

    * AdaptiveAvgPool2d: ONNX Runtime's QLinearGlobalAveragePool and OpenVINO's u8 pooling write an 8-bit
      output; eager QAT leaves the mean in float. An observed fake-quant on the mean (its own range, much
      narrower than its input's) trains the rounding the runtime does, and export reads its scale.
    * HardSwish: its gate is rounded as the runtime rounds it (GatedHardswish).
    * A weight computed in forward (models/heads.py's cosine head: ``weight_fake_quant`` is an Identity until
      here) gets an INT8 fake-quant, as the exported MatMul reads it.
    """
    import torch.nn as nn

    gated = _gated_hardswish_cls()
    for m in list(model.modules()):
        if hasattr(m, "effective_weight") and type(getattr(m, "weight_fake_quant", None)) is nn.Identity:
            m.weight_fake_quant = head_weight_fake_quant()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Hardswish and hasattr(child, "activation_post_process"):
                setattr(parent, name, gated(child.activation_post_process))
            elif isinstance(child, nn.AdaptiveAvgPool2d) and not hasattr(child, "activation_post_process"):
                child.activation_post_process = qat_qconfig().activation()
                child.register_forward_hook(_observe_output)


def set_weight_numerics(model: Any, numerics: str) -> None:
    """Put every weight fake-quant (and its observer) of a prepared model on the grid of ``numerics``.

    Done once after prepare, so every weight — conv, linear, ReLU6-fused, the cosine head's — gets the same
    grid whatever qconfig built it. Activations keep their 8-bit range (u8 x s7 is what fits int16)."""
    import torch

    if numerics not in NUMERICS:
        raise ModelError(f"unknown numerics {numerics!r}; fix: use one of {', '.join(NUMERICS)}")
    qmin, qmax = NUMERICS[numerics]
    tq = _tq()
    for m in model.modules():
        if isinstance(m, tq.FakeQuantizeBase) and getattr(m, "dtype", None) == torch.qint8:
            for obj in (m, getattr(m, "activation_post_process", None)):
                if obj is not None and hasattr(obj, "quant_min"):
                    obj.quant_min, obj.quant_max = qmin, qmax


def weight_range(model: Any) -> tuple[int, int]:
    """The (qmin, qmax) weight grid a prepared model trains (one grid per model, set_weight_numerics)."""
    import torch

    tq = _tq()
    ranges = {
        (int(m.quant_min), int(m.quant_max))
        for m in model.modules()
        if isinstance(m, tq.FakeQuantizeBase) and getattr(m, "dtype", None) == torch.qint8
    }
    return ranges.pop() if len(ranges) == 1 else (W_QMIN, W_QMAX)


def prepare_qat(model: Any, example: Any = None, numerics: str = DEFAULT_NUMERICS) -> Any:
    """Fuse Conv+BN(+ReLU), insert fake-quant on the weight grid of ``numerics`` (NUMERICS), and fake-quantize
    each conv/linear bias to int32 as the export does (int32_bias.py); the model must be a quantizable twin.
    ``example`` (one input batch) binds each bias to its input's fake-quant now; without it the model binds
    itself on its first forward."""
    tq = _tq()
    model.train()
    if not hasattr(model, "fuse_model"):
        raise ModelError(
            f"{type(model).__name__} is not a quantizable twin (no fuse_model); fix: build it with "
            "build_model(..., quantizable=True) from an arch that has one"
        )
    model.fuse_model(is_qat=True)
    model.qconfig = qat_qconfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
    _quantize_like_the_runtime(model)
    set_weight_numerics(model, numerics)
    from edgepipe.quant.int32_bias import add_int32_biases, bind_int32_biases

    add_int32_biases(model)
    if example is not None:
        bind_int32_biases(model, example)
    return model


def freeze_plan(epochs: int, bn_epoch: int, observer_epoch: int | None) -> tuple[int, int, list[str]]:
    """(BatchNorm freeze epoch, observer freeze epoch, warnings) safe for any epoch count.

    An unset observer epoch becomes min(2, epochs - 1), so even a one-epoch QAT trains its last epoch with
    fixed ranges (the default used to be 2, which a short run never reached: ranges and BatchNorm moved
    until the end and the fake-quant model fell far below FP32). A set epoch that training never reaches is
    kept (the stage freezes everything before evaluating anyway) but warned about."""
    warnings_: list[str] = []
    if observer_epoch is None:
        observer_epoch = max(0, min(2, epochs - 1))
    for key, value in (("freeze_bn_epoch", bn_epoch), ("freeze_observer_epoch", observer_epoch)):
        if epochs > 0 and value >= epochs:
            warnings_.append(
                f"qat.{key} {value} never arrives in {epochs} epoch(s): it moves for the whole run and is "
                f"frozen only for the final evaluation; fix: set qat.{key} below qat.epochs ({epochs})"
            )
    return bn_epoch, observer_epoch, warnings_


def freeze_observers(model: Any) -> None:
    """Stop updating quantization ranges (scales/zero-points stay fixed for the rest of training)."""
    model.apply(_tq().disable_observer)


def freeze_bn_stats(model: Any) -> None:
    """Use BatchNorm running statistics from now on (the folded weights stop moving with batch stats)."""
    import torch.ao.nn.intrinsic.qat as nniqat

    model.apply(nniqat.freeze_bn_stats)


def fake_quant_modules(model: Any) -> list[tuple[str, Any]]:
    tq = _tq()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, tq.FakeQuantizeBase)]


def is_qat_conv(module: Any) -> bool:
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.nn.qat as nnqat

    return isinstance(module, (nniqat.ConvBn2d, nniqat.ConvBnReLU2d, nniqat.ConvReLU2d, nnqat.Conv2d))


def is_qat_linear(module: Any) -> bool:
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.nn.qat as nnqat

    return isinstance(module, (nnqat.Linear, nniqat.LinearReLU))


# --- building blocks for quantizable models defined here (EfficientNet-Lite), kept beside the rest of
# torch.ao so a move to PT2E stays in this module.


def quant_stubs() -> tuple[Any, Any]:
    """(QuantStub, DeQuantStub): identities until prepare_qat gives the first a fake-quant."""
    tq = _tq()
    return tq.QuantStub(), tq.DeQuantStub()


def float_output_qconfig():
    """qat_qconfig's weights with no output fake-quant: for a linear whose output feeds float ops (a residual
    add, LayerNorm, GELU, Softmax). Its export is DQ(x), DQ(w) -> Gemm with a float output, which ONNX Runtime
    runs as an integer GEMM (QGemm) and OpenVINO as an int8 FullyConnected; a Q/DQ there would only round."""
    import torch.nn as nn

    tq = _tq()
    return tq.QConfig(activation=nn.Identity, weight=qat_qconfig().weight)


def float_functional() -> Any:
    """A FloatFunctional, so a residual add gets its own output fake-quant (QLinearAdd in ONNX)."""
    from torch.ao.nn.quantized import FloatFunctional

    return FloatFunctional()


def relu6_qconfig():
    """Weights as qat_qconfig; the activation is fixed to [0, 6] at scale 6/255, zero-point 0.

    With Conv+BN+ReLU fused, saturating at code 255 == 6.0 *is* the clip of ReLU6, so the QAT model computes
    ReLU6 exactly up to rounding, and the export is DQ -> Conv -> Relu -> Q(6/255, 0), which ONNX Runtime
    fuses into QLinearConv (no Clip node left). A learned range would not do: an observer after the fused
    ReLU sees values above 6 and widens the range past the clip, changing the function (torchvision's
    quantizable MobileNetV2 does that, replacing ReLU6 by ReLU, and retrains)."""
    import torch

    tq = _tq()
    act = tq.FixedQParamsFakeQuantize.with_args(
        observer=tq.FixedQParamsObserver.with_args(
            scale=6.0 / ACT_QMAX, zero_point=0, dtype=torch.quint8, quant_min=ACT_QMIN, quant_max=ACT_QMAX
        )
    )
    return tq.QConfig(activation=act, weight=qat_qconfig().weight)


def fuse_groups(module: Any, groups: list[list[str]], is_qat: bool) -> None:
    """Fuse torch.ao's standard groups (Conv+BN, Conv+ReLU, Conv+BN+ReLU, Linear+ReLU) in place."""
    tq = _tq()
    (tq.fuse_modules_qat if is_qat else tq.fuse_modules)(module, groups, inplace=True)


def fuse_conv_bn_relu6(model: Any, groups: list[list[str]], is_qat: bool) -> None:
    """Fuse [conv, bn] and [conv, bn, relu6] module groups in place.

    torch.ao fuses Conv+BN+ReLU, not ReLU6. For QAT, a ReLU6 group becomes ConvBnReLU2d with the fixed
    [0, 6] activation of ``relu6_qconfig`` (exact ReLU6, see there); for eval fusion BN is folded into the
    conv and the ReLU6 kept, so the float function is unchanged either way."""
    import torch.nn as nn
    from torch.ao.quantization.fuser_method_mappings import fuse_conv_bn, fuse_conv_bn_relu

    tq = _tq()

    def conv_bn_relu6(qat: bool, conv: Any, bn: Any, relu6: Any) -> Any:
        if qat:
            fused = fuse_conv_bn_relu(True, conv, bn, nn.ReLU())
            fused.qconfig = relu6_qconfig()
            return fused
        return nn.Sequential(fuse_conv_bn(False, conv, bn), relu6)

    fuse = tq.fuse_modules_qat if is_qat else tq.fuse_modules
    fuse(
        model,
        groups,
        inplace=True,
        fuse_custom_config_dict={
            "additional_fuser_method_mapping": {(nn.Conv2d, nn.BatchNorm2d, nn.ReLU6): conv_bn_relu6}
        },
    )

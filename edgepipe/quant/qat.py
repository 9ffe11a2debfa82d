"""Eager-mode QAT with torch.ao.quantization: the ONE module that touches it.

torch's eager quantization is deprecated (torchao / PT2E are its successors) but still works in torch 2.15;
keeping every call here means a move to PT2E stays local. The ONNX path never calls ``convert()``: it reads
the trained fake-quant parameters (see qdq.py) and writes QDQ directly.
"""

from __future__ import annotations

import warnings
from typing import Any

# Per-channel symmetric INT8 weights, per-tensor affine UINT8 activations (ONNX Runtime's U8S8 and OpenVINO's
# u8 x i8 kernels). Full 8-bit activation range: reduce_range only matters on CPUs without VNNI.
ACT_QMIN, ACT_QMAX = 0, 255
W_QMIN, W_QMAX = -128, 127


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


def prepare_qat(model: Any) -> Any:
    """Fuse Conv+BN(+ReLU) and insert fake-quant; the model must be a torchvision quantizable twin."""
    tq = _tq()
    model.train()
    if not hasattr(model, "fuse_model"):
        raise TypeError(f"{type(model).__name__} is not a torchvision quantizable model (no fuse_model)")
    model.fuse_model(is_qat=True)
    model.qconfig = qat_qconfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
    return model


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

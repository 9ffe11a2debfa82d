"""Channel and spatial attention for ``model.attention``: ECA, CBAM and squeeze-excite.

One class serves the float model and its quantizable twin (the state dicts are equal): products, sums and
concatenations go through FloatFunctional, which is a plain torch op until ``prepare_qat`` gives it an output
fake-quant, and ``fuse_model`` fuses the Conv+ReLU pairs for QAT. Gates are ``nn.Sigmoid`` (eager QAT gives
them torch's fixed [0, 1] output quantization, scale 1/256, which ONNX Runtime runs as QLinearSigmoid), or
``nn.Hardsigmoid`` in squeeze-excite (rewritten as integer Add by quant/onnx_qdq.py).

Every module here is new to a pretrained backbone: it has ``edgepipe_fresh = True``, which models/build.py
reads to load the backbone's weights around it and say so.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from edgepipe.models.choices import ATTENTIONS


def _float_functional() -> nn.Module:
    from edgepipe.quant.qat import float_functional

    return float_functional()


def eca_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: odd, near |log2(C) + b| / gamma (3 for 64..255 channels)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., 2020): a 1-D conv across the pooled channel descriptor.

    The 1-D conv over C channels is written as a (k x 1) Conv2d on the descriptor viewed as [N, 1, C, 1]:
    the same k*C multiply-accumulates, but eager QAT has a QAT module (per-channel weight fake-quant) for
    Conv2d and none for Conv1d, and the integer runtimes fuse it like any other conv (QLinearConv)."""

    edgepipe_fresh = True

    def __init__(self, channels: int, kernel: int | None = None):
        super().__init__()
        k = kernel or eca_kernel(channels)
        self.channels, self.kernel = channels, k
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(1, 1, (k, 1), padding=(k // 2, 0), bias=False)
        self.gate = nn.Sigmoid()
        self.scale = _float_functional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x).reshape(-1, 1, self.channels, 1)
        y = self.gate(self.conv(y)).reshape(-1, self.channels, 1, 1)
        return self.scale.mul(x, y)

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Nothing to fuse (no BN, no ReLU)."""

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel={self.kernel}"


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018): a channel gate, then a spatial gate.

    Channel: a shared 1x1-conv MLP over the average- and max-pooled descriptors, summed, sigmoid. Spatial:
    the channel-wise mean and max maps, concatenated, a (k x k) conv, sigmoid. Simplified as in the reports
    this reproduces: the spatial conv has a bias and no BatchNorm."""

    edgepipe_fresh = True

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channels, self.kernel = channels, kernel
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.channel_sum = _float_functional()
        self.channel_gate = nn.Sigmoid()
        self.channel_scale = _float_functional()
        self.spatial_cat = _float_functional()
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.spatial_gate = nn.Sigmoid()
        self.spatial_scale = _float_functional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.channel_sum.add(self.mlp(self.avg_pool(x)), self.mlp(self.max_pool(x)))
        x = self.channel_scale.mul(x, self.channel_gate(a))
        s = self.spatial_cat.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return self.spatial_scale.mul(x, self.spatial_gate(self.spatial(s)))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        from edgepipe.quant.qat import fuse_groups

        fuse_groups(self.mlp, [["0", "1"]], is_qat=bool(is_qat))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel={self.kernel}"


class SqueezeExcite(nn.Module):
    """Squeeze-excite (Hu et al., 2018) with MobileNetV3's hard-sigmoid gate, for backbones that have none
    (ResNets); MobileNetV3 keeps torchvision's own, whose ImageNet weights load."""

    edgepipe_fresh = True

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, max(8, channels // reduction), 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(max(8, channels // reduction), channels, 1)
        self.gate = nn.Hardsigmoid()
        self.scale = _float_functional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.mul(x, self.gate(self.fc2(self.relu(self.fc1(self.pool(x))))))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        from edgepipe.quant.qat import fuse_groups

        fuse_groups(self, [["fc1", "relu"]], is_qat=bool(is_qat))


def make_attention(
    kind: str,
    channels: int,
    *,
    eca_kernel_size: int | None = None,
    cbam_reduction: int = 16,
    cbam_kernel: int = 7,
) -> nn.Module:
    """The ``model.attention`` module for a ``channels``-wide feature map (``none``: the identity)."""
    if kind == "eca":
        return ECA(channels, eca_kernel_size)
    if kind == "cbam":
        return CBAM(channels, cbam_reduction, cbam_kernel)
    if kind == "se":
        return SqueezeExcite(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown attention '{kind}'; use one of {ATTENTIONS}")

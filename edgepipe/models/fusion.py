"""``model.fusion: multiscale``: global-average-pool a few intermediate feature maps and concatenate them
before the head (the multi-scale feature fusion of the LiteIResNet-style ablation).

Each pooled map gets its own output quantization in QAT (quant/qat.py observes every AdaptiveAvgPool2d, as
ONNX Runtime's QLinearGlobalAveragePool writes 8 bits), and the concatenation is a FloatFunctional, so the
INT8 graph is GlobalAveragePool -> Q/DQ per scale -> Concat -> Q/DQ -> the head's Gemm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class MultiScaleFusion(nn.Module):
    """[N, C_i, H_i, W_i] feature maps -> [N, sum(C_i)] pooled and concatenated descriptors."""

    edgepipe_fresh = True

    def __init__(self, taps: Sequence[int], channels: Sequence[int]):
        super().__init__()
        if len(taps) != len(channels) or not taps:
            raise ValueError("multiscale fusion needs one channel count per tapped feature map")
        self.taps, self.channels = tuple(taps), tuple(channels)
        self.out_features = sum(channels)
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(1) for _ in taps)
        from edgepipe.quant.qat import float_functional

        self.cat = float_functional()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [pool(f) for pool, f in zip(self.pools, features, strict=True)]
        return torch.flatten(self.cat.cat(pooled, 1), 1)

    def extra_repr(self) -> str:
        return f"taps={list(self.taps)}, channels={list(self.channels)}"


def stage_ends(strides: Sequence[int]) -> list[int]:
    """Indices of the last block at each resolution, given each block's stride (a block of stride 2 starts a
    new resolution): [1, 2, 1, 2, 1] -> [0, 2, 4]."""
    ends = [i - 1 for i in range(1, len(strides)) if strides[i] > 1]
    return [*ends, len(strides) - 1]

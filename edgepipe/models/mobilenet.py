"""MobileNetV3 variants (float and quantizable twin): ``model.attention`` replaces squeeze-excite in blocks
that have it, ``model.fusion: multiscale`` feeds the classifier pooled maps of several resolutions.

The module names stay torchvision's (``features.N.block.K``, ``classifier.N``), so ImageNet weights load into
every tensor a variant kept; the plain model (attention se, no fusion) is torchvision's own class, untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torchvision.models.mobilenetv3 import MobileNetV3
from torchvision.models.quantization.mobilenetv3 import QuantizableInvertedResidual, QuantizableMobileNetV3
from torchvision.ops.misc import SqueezeExcitation

from edgepipe.models.attention import make_attention
from edgepipe.models.fusion import MultiScaleFusion, stage_ends
from edgepipe.models.variant import Variant


def _setting(arch: str, width_mult: float) -> tuple[list[Any], int]:
    # torchvision's own block table (its quantization package builds from it too); not a public name.
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

    return _mobilenet_v3_conf(arch, width_mult=width_mult)


def _apply(model: Any, setting: list[Any], variant: Variant) -> None:
    """Swap squeeze-excite for the chosen attention; add the fusion and widen the classifier's input."""
    if variant.attention not in (None, "se"):
        for block in model.features:
            seq = getattr(block, "block", None)
            for name, child in list(seq.named_children()) if seq is not None else []:
                if isinstance(child, SqueezeExcitation):
                    channels = child.fc1.in_channels
                    setattr(
                        seq, name, make_attention(variant.attention, channels, **variant.attention_kwargs())
                    )
    model.fusion = None
    if variant.fusion == "multiscale":
        # features: stem (stride 2), the blocks, the last 1x1 conv; taps: the last block at 1/8 and 1/16
        # resolution, and the last conv.
        strides = [2, *(c.stride for c in setting), 1]
        ends = stage_ends(strides)
        taps = [*ends[-3:-1], len(model.features) - 1]
        channels = [model.features[i].out_channels for i in taps]
        model.fusion = MultiScaleFusion(taps, channels)
        first = model.classifier[0]
        model.classifier[0] = nn.Linear(model.fusion.out_features, first.out_features)
        model.classifier[0].edgepipe_fresh = True


def _forward(model: Any, x: torch.Tensor) -> torch.Tensor:
    if model.fusion is None:
        x = torch.flatten(model.avgpool(model.features(x)), 1)
    else:
        taps, kept = set(model.fusion.taps), []
        for i, block in enumerate(model.features):
            x = block(x)
            if i in taps:
                kept.append(x)
        x = model.fusion(kept)
    return model.classifier(x)


class MobileNetV3Variant(MobileNetV3):
    def __init__(self, setting: list[Any], last_channel: int, variant: Variant, **kwargs: Any):
        super().__init__(setting, last_channel, **kwargs)
        _apply(self, setting, variant)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)


class QuantizableMobileNetV3Variant(QuantizableMobileNetV3):
    """torchvision's quantizable MobileNetV3 with the variant's modules; ``fuse_model`` fuses them too."""

    def __init__(self, setting: list[Any], last_channel: int, variant: Variant, **kwargs: Any):
        super().__init__(setting, last_channel, block=QuantizableInvertedResidual, **kwargs)
        _apply(self, setting, variant)
        for m in self.modules():  # as torchvision's _replace_relu: fused ReLUs must not be in-place
            if type(m) is nn.ReLU:
                m.inplace = False

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)

    def fuse_model(self, is_qat: bool | None = None) -> None:
        super().fuse_model(is_qat)  # Conv+BN(+ReLU) and torchvision's squeeze-excite
        for m in list(self.modules()):
            if getattr(m, "edgepipe_fresh", False) and hasattr(m, "fuse_model"):
                m.fuse_model(is_qat)


def mobilenet_v3_variant(
    arch: str,
    num_classes: int,
    variant: Variant,
    quantizable: bool,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> Any:
    setting, last_channel = _setting(arch, width_mult)
    cls = QuantizableMobileNetV3Variant if quantizable else MobileNetV3Variant
    return cls(setting, last_channel, variant, num_classes=num_classes, dropout=dropout)

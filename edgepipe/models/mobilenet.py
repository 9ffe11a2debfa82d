"""MobileNetV3 variants (float and quantizable twin): ``model.attention`` replaces squeeze-excite in blocks
that have it, ``model.fusion: multiscale`` feeds the classifier pooled maps of several resolutions,
``model.variant: minimalistic`` is the paper's INT8-friendly block table (Howard et al. 2019, section 6.1.1;
the TF model garden's ``mobilenet_v3_large_minimalistic``): no squeeze-excite, ReLU wherever the standard
model has h-swish (stem, blocks, last conv, classifier), every depthwise kernel 3x3. Its channels, expansions
and strides are the standard model's, so only the 5x5 depthwise weights and the SE layers differ.

The module names stay torchvision's (``features.N.block.K``, ``classifier.N``), so ImageNet weights load into
every tensor a variant kept; the plain model (attention se, no fusion) is torchvision's own class, untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
from torchvision.models.mobilenetv3 import MobileNetV3
from torchvision.models.quantization.mobilenetv3 import QuantizableInvertedResidual, QuantizableMobileNetV3
from torchvision.ops.misc import SqueezeExcitation

from edgepipe.models.attention import make_attention
from edgepipe.models.fusion import MultiScaleFusion, stage_ends
from edgepipe.models.variant import Variant


def _setting(arch: str, width_mult: float, blocks: str = "standard") -> tuple[list[Any], int]:
    # torchvision's own block table (its quantization package builds from it too); not a public name.
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

    setting, last_channel = _mobilenet_v3_conf(arch, width_mult=width_mult)
    if blocks == "minimalistic":
        setting = [_minimal(c) for c in setting]
    return setting, last_channel


def _minimal(cnf: Any) -> Any:
    """A block config of the minimalistic table: 3x3 depthwise, no squeeze-excite, ReLU."""
    cnf = copy.copy(cnf)
    cnf.kernel, cnf.use_se, cnf.use_hs = 3, False, False
    return cnf


def _relu_everywhere(model: Any) -> None:
    """Stem, last 1x1 conv and classifier: torchvision hard-codes Hardswish there; minimalistic uses ReLU
    (not in-place, so eager quantization can fuse it into the conv / linear before it)."""
    for parent in (model.features[0], model.features[-1], model.classifier):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Hardswish:
                setattr(parent, name, nn.ReLU(inplace=False))
            elif isinstance(child, nn.Dropout):  # ReLU's backward needs its output: no in-place dropout on it
                child.inplace = False


def _apply(model: Any, setting: list[Any], variant: Variant) -> None:
    """Swap squeeze-excite for the chosen attention; add the fusion and widen the classifier's input."""
    if variant.blocks == "minimalistic":
        _relu_everywhere(model)
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
        if type(self.classifier[1]) is nn.ReLU:  # minimalistic: Linear+ReLU, one integer Gemm with its ReLU
            from edgepipe.quant.qat import fuse_groups

            fuse_groups(self.classifier, [["0", "1"]], bool(is_qat))
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
    setting, last_channel = _setting(arch, width_mult, variant.blocks)
    cls = QuantizableMobileNetV3Variant if quantizable else MobileNetV3Variant
    return cls(setting, last_channel, variant, num_classes=num_classes, dropout=dropout)

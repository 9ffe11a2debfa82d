"""torchvision ResNets (float and quantizable twin) shaped for the registry: a dropout head and freeze blocks.

torchvision's ResNets have no dropout; ``model.dropout`` is honoured by making ``fc`` a
``Sequential(Dropout, Linear)`` in both twins, so their state-dict keys stay equal (``fc.1.*``) and the
finetuned float weights load into the quantizable twin unchanged. Dropout is the identity in eval and in
the exported graph.

``model.attention`` adds a module to every bottleneck (``layerN.M.attention``), on the residual branch after
its last BatchNorm and before the skip add, where CBAM (Woo et al., 2018) and SE-ResNet put it: the identity
path stays as the ImageNet weights expect it, so a fresh gate (about 0.5 everywhere at init) halves one
branch per block instead of the whole signal 16 times over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgepipe.models.variant import Variant

# torchvision.models.quantization has no resnext50_32x4d; its resnet50 with ResNeXt's grouping is the same
# network (torchvision builds resnext50_32x4d as resnet50's layers with these two arguments).
_QUANTIZABLE = {"resnext50_32x4d": ("resnet50", {"groups": 32, "width_per_group": 4})}
LAYERS = {
    "resnet50": ([3, 4, 6, 3], {}),
    "resnext50_32x4d": ([3, 4, 6, 3], {"groups": 32, "width_per_group": 4}),
}


def resnet_builder(arch: str, quantizable: bool) -> Callable[..., Any]:
    """A builder for torchvision's ``arch`` (e.g. resnet50), or its quantization twin if ``quantizable``."""

    def build(num_classes: int, dropout: float = 0.0, variant: Variant | None = None) -> Any:
        import torch.nn as nn

        if variant is not None and variant.vit is not None:
            from edgepipe.models.vit_hybrid import hybrid_resnet

            model = hybrid_resnet(*LAYERS[arch], num_classes, variant, quantizable)
        elif variant is not None and variant.attention not in (None, "none"):
            model = _attention_resnet(arch, num_classes, variant, quantizable)
        elif quantizable:
            from torchvision.models import quantization as q

            fn, extra = _QUANTIZABLE.get(arch, (arch, {}))
            model = getattr(q, fn)(weights=None, quantize=False, num_classes=num_classes, **extra)
        else:
            from torchvision import models

            model = getattr(models, arch)(weights=None, num_classes=num_classes)
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
        return model

    return build


def _attention_resnet(arch: str, num_classes: int, variant: Variant, quantizable: bool) -> Any:
    """ResNet / its quantizable twin built from torchvision's public classes with attention bottlenecks."""
    import torch.nn as nn
    from torchvision.models.quantization.resnet import QuantizableBottleneck, QuantizableResNet
    from torchvision.models.resnet import Bottleneck, ResNet

    from edgepipe.models.attention import make_attention

    kwargs = variant.attention_kwargs()

    class AttentionBottleneck(Bottleneck):
        def __init__(self, *args: Any, **kw: Any):
            super().__init__(*args, **kw)
            self.attention = make_attention(variant.attention, self.bn3.num_features, **kwargs)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.attention(self.bn3(self.conv3(out)))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class QuantizableAttentionBottleneck(QuantizableBottleneck):
        def __init__(self, *args: Any, **kw: Any):
            super().__init__(*args, **kw)
            self.attention = make_attention(variant.attention, self.bn3.num_features, **kwargs)

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.relu2(self.bn2(self.conv2(out)))
            out = self.attention(self.bn3(self.conv3(out)))
            identity = x if self.downsample is None else self.downsample(x)
            return self.skip_add_relu.add_relu(out, identity)

        def fuse_model(self, is_qat: bool | None = None) -> None:
            super().fuse_model(is_qat)
            self.attention.fuse_model(is_qat)

    class QuantizableAttentionResNet(QuantizableResNet):
        def fuse_model(self, is_qat: bool | None = None) -> None:
            super().fuse_model(is_qat)  # the stem (torchvision fuses only its own exact block types)
            for m in list(self.modules()):
                if isinstance(m, QuantizableAttentionBottleneck):
                    m.fuse_model(is_qat)

    layers, extra = LAYERS[arch]
    if quantizable:
        model = QuantizableAttentionResNet(
            QuantizableAttentionBottleneck, layers, num_classes=num_classes, **extra
        )
        for m in model.modules():  # as torchvision's _replace_relu: fused ReLUs must not be in-place
            if type(m) is nn.ReLU:
                m.inplace = False
        return model
    return ResNet(AttentionBottleneck, layers, num_classes=num_classes, **extra)


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

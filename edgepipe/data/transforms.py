"""Train/eval transforms (torchvision.transforms.v2) from the preprocessing that travels with a model
(models/preprocessing.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgepipe.recipe import AugmentConfig

if TYPE_CHECKING:
    from edgepipe.models.preprocessing import Preprocessing


def _resize(pre: Preprocessing):
    from torchvision.transforms import InterpolationMode, v2

    return v2.Resize(pre.resize, interpolation=InterpolationMode(pre.interpolation), antialias=True)


def _eval_geometry_ops(pre: Preprocessing) -> list:
    from torchvision.transforms import v2

    return [v2.PILToTensor(), _resize(pre), v2.CenterCrop(pre.crop)]


def eval_geometry(pre: Preprocessing):
    """eval_transform up to its uint8 CHW crop (edgepipe predict scales and normalises whole batches)."""
    from torchvision.transforms import v2

    return v2.Compose(_eval_geometry_ops(pre))


def eval_transform(pre: Preprocessing):
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            *_eval_geometry_ops(pre),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )


def train_transform(pre: Preprocessing, aug: AugmentConfig):
    """Crop (random resized, random, or centre), then geometric, then colour; erasing after normalising."""
    import torch
    from torchvision.transforms import InterpolationMode, v2

    size = pre.crop
    ops: list = [v2.PILToTensor()]
    if aug.rrc_scale is not None:
        ops.append(
            v2.RandomResizedCrop(
                size, scale=aug.rrc_scale, interpolation=InterpolationMode(pre.interpolation), antialias=True
            )
        )
    elif aug.random_crop is not None:
        crop = aug.random_crop
        ops += [
            _resize(pre),
            v2.RandomCrop(size, padding=crop.padding or None, padding_mode=crop.padding_mode),
        ]
    else:
        ops += [_resize(pre), v2.CenterCrop(size)]
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
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    if aug.random_erasing:
        ops.append(v2.RandomErasing(p=aug.random_erasing))
    return v2.Compose(ops)

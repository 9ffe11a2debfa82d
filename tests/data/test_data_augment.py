"""Augmentation from data.augment: each option is in the train transform and changes images reproducibly
under a seed; the eval transform never augments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from edgepipe.data.transforms import eval_transform, train_transform
from edgepipe.errors import RecipeError
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.recipe import AugmentConfig, DataConfig, parse_recipe

OFF = {"hflip": False, "rrc_scale": None}  # resize + centre crop, nothing random
OPTIONS = {
    "hflip": ({"hflip": True}, v2.RandomHorizontalFlip),
    "rrc_scale": ({"rrc_scale": (0.5, 1.0)}, v2.RandomResizedCrop),
    "rotation": ({"rotation": 20}, v2.RandomRotation),
    "color_jitter": ({"color_jitter": 0.4}, v2.ColorJitter),
    "random_erasing": ({"random_erasing": 1.0}, v2.RandomErasing),
    "affine": ({"affine": {"translate": 0.1, "scale": (0.9, 1.1), "shear": 10}}, v2.RandomAffine),
    "perspective": ({"perspective": {"distortion_scale": 0.3, "p": 1.0}}, v2.RandomPerspective),
    "random_crop": ({"random_crop": {"padding": 4}}, v2.RandomCrop),
}


def _image(size: int = 40) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _pre(crop_pct: float = 0.875):
    data = DataConfig(root="x", image_size=32, crop_pct=crop_pct)
    return Preprocessing.for_model("mobilenet_v3_large", data)


def _run(tf, img, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return tf(img)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_augment_option_is_in_the_train_transform_and_changes_images_reproducibly(name):
    over, op = OPTIONS[name]
    pre, img = _pre(), _image()
    plain = train_transform(pre, AugmentConfig(**OFF))
    tf = train_transform(pre, AugmentConfig(**{**OFF, **over}))
    assert any(isinstance(t, op) for t in tf.transforms)
    assert not any(isinstance(t, op) for t in plain.transforms)
    base = plain(img)
    outs = [_run(tf, img, seed) for seed in range(8)]
    assert all(o.shape == base.shape == (3, 32, 32) for o in outs)
    assert torch.equal(outs[0], _run(tf, img, 0))  # same seed, same image
    assert any(not torch.equal(o, base) for o in outs)  # and it does augment


def test_eval_transform_never_augments():
    pre, img = _pre(), _image()
    kinds = {type(t) for t in eval_transform(pre).transforms}
    assert kinds == {v2.PILToTensor, v2.Resize, v2.CenterCrop, v2.ToDtype, v2.Normalize}
    everything = AugmentConfig(**{k: v for over, _ in OPTIONS.values() for k, v in over.items()} | {
        "rrc_scale": None
    })
    assert everything.random_crop is not None  # every option at once builds a train transform
    train_transform(pre, everything)
    ev = eval_transform(pre)
    assert all(torch.equal(_run(ev, img, s), _run(ev, img, 0)) for s in range(4))


def test_random_crop_keeps_scale_and_needs_no_rrc():
    aug = AugmentConfig(hflip=False, rrc_scale=None, random_crop={"padding": 2, "padding_mode": "reflect"})
    tf = train_transform(_pre(), aug)
    crop = next(t for t in tf.transforms if isinstance(t, v2.RandomCrop))
    assert crop.size == (32, 32) and crop.padding_mode == "reflect"
    with pytest.raises(RecipeError, match=r"data\.augment: random_crop and rrc_scale are two ways to crop"):
        parse_recipe({"name": "r", "data": {"root": "x", "augment": {"random_crop": {}}}})


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"affine": {"translate": 1.5}}, r"data\.augment\.affine\.translate: must be <= 1\.0 \(got 1\.5\)"),
        ({"affine": {"shear": -1}}, r"data\.augment\.affine\.shear: must be >= 0"),
        ({"affine": {"scale": [1.2, 0.8]}}, r"data\.augment\.affine: affine\.scale must be \[low, high\]"),
        ({"affine": {}}, r"data\.augment\.affine: affine changes nothing; fix:"),
        ({"affine": {"tranlate": 0.1}}, r"affine\.tranlate: unknown key; did you mean 'translate'"),
        ({"perspective": {"p": 0.5}}, r"perspective\.distortion_scale: required key is missing"),
        ({"perspective": {"distortion_scale": 2}}, r"perspective\.distortion_scale: must be <= 1"),
        ({"random_crop": {"padding": -1}, "rrc_scale": None}, r"random_crop\.padding: must be >= 0"),
    ],
)
def test_augment_options_are_validated_naming_the_key(augment, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({"name": "r", "data": {"root": "x", "augment": augment}})


def test_random_crop_that_crops_the_whole_image_is_an_error():
    data = {"root": "x", "crop_pct": 1.0, "augment": {"rrc_scale": None, "random_crop": {}}}
    with pytest.raises(RecipeError, match=r"random_crop with padding 0 and crop_pct 1\.0 .* fix:"):
        parse_recipe({"name": "r", "data": data})

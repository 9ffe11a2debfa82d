"""Preprocessing record: the model's registry statistics unless the recipe sets its own."""

from __future__ import annotations

import pytest

from edgepipe.data.transforms import preprocessing_from
from edgepipe.errors import ModelError
from edgepipe.models.registry import get_spec
from edgepipe.recipe import IMAGENET_MEAN, IMAGENET_STD, DataConfig


def test_mean_std_come_from_the_model_entry_by_default():
    pre = preprocessing_from(DataConfig(root="x", image_size=64, crop_pct=0.5), "mobilenet_v3_large")
    spec = get_spec("mobilenet_v3_large")
    assert pre["mean"] == list(spec.mean) == list(IMAGENET_MEAN)
    assert pre["std"] == list(spec.std) == list(IMAGENET_STD)
    assert pre["input_size"] == [3, 64, 64] and pre["resize"] == 128 and pre["crop"] == 64


def test_recipe_mean_std_override_the_model_entry():
    cfg = DataConfig(root="x", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    pre = preprocessing_from(cfg, "mobilenet_v3_large")
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.25, 0.25, 0.25]


def test_unknown_arch_is_a_model_error():
    with pytest.raises(ModelError, match="unknown model.arch"):
        preprocessing_from(DataConfig(root="x"), "no_such_net")

"""The preprocessing record: the model's registry statistics unless the recipe sets its own; one JSON form
read back exactly, and a damaged record refused by name."""

from __future__ import annotations

import json

import pytest

from edgepipe.constants import IMAGENET_MEAN, IMAGENET_STD
from edgepipe.errors import ModelError
from edgepipe.models.preprocessing import Preprocessing
from edgepipe.models.registry import get_spec
from edgepipe.recipe import DataConfig


def test_mean_std_come_from_the_model_entry_by_default():
    pre = Preprocessing.for_model("mobilenet_v3_large", DataConfig(root="x", image_size=64, crop_pct=0.5))
    assert pre.mean == get_spec("mobilenet_v3_large").mean == IMAGENET_MEAN
    assert pre.std == IMAGENET_STD
    assert pre.input_size == (3, 64, 64) and pre.resize == 128 and pre.crop == 64
    lite = Preprocessing.for_model("efficientnet_lite0", DataConfig(root="x"))
    assert lite.mean == get_spec("efficientnet_lite0").mean != IMAGENET_MEAN


def test_recipe_mean_std_override_the_model_entry():
    cfg = DataConfig(root="x", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    pre = Preprocessing.for_model("mobilenet_v3_large", cfg)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25, 0.25, 0.25)


def test_unknown_arch_is_a_model_error():
    with pytest.raises(ModelError, match="unknown model.arch"):
        Preprocessing.for_model("no_such_net", DataConfig(root="x"))


def test_the_stored_form_round_trips_through_json_with_the_keys_artifacts_carry():
    pre = Preprocessing.make(32, resize=40, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    stored = json.loads(json.dumps(pre.to_dict()))
    assert stored == {
        "input_size": [3, 32, 32], "resize": 40, "crop": 32, "interpolation": "bilinear",
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "color": "RGB", "layout": "NCHW",
        "scale": "x/255 then (x-mean)/std",
    }
    assert Preprocessing.from_dict(stored) == pre


GOOD = {"input_size": [3, 8, 8], "resize": 8, "crop": 8, "mean": [0] * 3, "std": [1] * 3}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({k: v for k, v in GOOD.items() if k != "std"}, "lacks std; fix:"),
        ("not a dict", "lacks input_size, resize, crop, mean, std"),
        ({**GOOD, "resize": "big"}, "malformed"),
        ({**GOOD, "resize": 4}, "resize >= crop"),
        ({**GOOD, "input_size": [8, 8]}, "3-d input size"),
    ],
)
def test_a_damaged_record_is_refused_naming_the_problem(record, match):
    with pytest.raises(ModelError, match=match):
        Preprocessing.from_dict(record)

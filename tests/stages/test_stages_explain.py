"""The explain stage's choices: which test images it shows, its recipe section, its refusal without
grad-cam (the grid itself is drawn in the tiny end-to-end run, tests/test_pipeline_e2e.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgepipe import stages
from edgepipe.errors import RecipeError
from edgepipe.pipeline import plan
from edgepipe.recipe import parse_recipe
from edgepipe.stages.explain import pick

BASE = {"name": "r", "data": {"root": "photos"}}


def test_pick_takes_per_class_the_most_confident_right_and_wrong_images():
    probs = np.array(
        [
            [0.9, 0.1],  # class 0, right, 0.9
            [0.6, 0.4],  # class 0, right, 0.6
            [0.2, 0.8],  # class 0, wrong (says 1) with 0.8
            [0.45, 0.55],  # class 0, wrong with 0.55
            [0.3, 0.7],  # class 1, right, 0.7
            [0.1, 0.9],  # class 1, right, 0.9
        ]
    )
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert pick(probs, labels, 1) == {(0, "correct"): [0], (0, "wrong"): [2], (1, "correct"): [5],
                                      (1, "wrong"): []}  # fmt: skip
    two = pick(probs, labels, 2)
    assert two[(0, "correct")] == [0, 1] and two[(0, "wrong")] == [2, 3] and two[(1, "correct")] == [5, 4]


def test_explain_section_is_checked_and_changes_only_the_explain_stage_key():
    with pytest.raises(RecipeError, match=r"explain\.method: 'gradcamm' is not one of gradcam, gradcam\+\+"):
        parse_recipe({**BASE, "explain": {"method": "gradcamm"}})
    with pytest.raises(RecipeError, match=r"explain\.per_class: must be <= 5"):
        parse_recipe({**BASE, "explain": {"per_class": 9}})
    with pytest.raises(RecipeError, match=r"explain\.image: unknown key; did you mean 'images'"):
        parse_recipe({**BASE, "explain": {"image": 100}})
    before = parse_recipe(BASE)
    after = parse_recipe({**BASE, "explain": {"method": "gradcam++", "images": 50}})
    changed = {n for n in stages.listable() if stages.get(n).config(before) != stages.get(n).config(after)}
    assert changed == {"explain"}


def test_explain_is_listable_and_without_grad_cam_refused_before_any_stage_runs(monkeypatch):
    assert plan(parse_recipe({**BASE, "stages": ["finetune", "qat", "explain"]})) == [
        "split", "finetune", "qat", "explain"
    ]  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "pytorch_grad_cam" else real(n, *a)
    )
    with pytest.raises(RecipeError, match=r"needs .*grad-cam.*fix: pip install 'edgepipe\[explain\]'"):
        plan(parse_recipe(BASE))
    without = ["finetune", "qat", "export", "ptq", "bench"]
    assert "explain" not in plan(parse_recipe({**BASE, "stages": without}))
    with pytest.raises(RecipeError, match="'explain' needs qat_checkpoint"):
        plan(parse_recipe({**BASE, "stages": ["finetune", "explain"]}))

"""Losses, class weights, the balanced sampler and gradient clipping (edgepipe.train.losses, loop)."""

import json
from collections import Counter

import pytest
import torch

from edgepipe.errors import RecipeError
from edgepipe.pipeline import build
from edgepipe.recipe import FinetuneConfig, parse_recipe
from edgepipe.train.loop import train_one_epoch
from edgepipe.train.losses import (
    FocalLoss,
    balanced_class_weights,
    balanced_sampler,
    build_criterion,
    focal_loss,
)
from tests.conftest import make_imagefolder, tiny_recipe

BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


def test_focal_loss_with_gamma_zero_equals_cross_entropy_with_weights_and_smoothing():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 4), torch.randint(0, 4, (16,))
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    ce = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)(logits, target)
    torch.testing.assert_close(focal_loss(0.0, weight, 0.1)(logits, target), ce)
    torch.testing.assert_close(
        focal_loss(0.0)(logits, target), torch.nn.functional.cross_entropy(logits, target)
    )


def test_focal_loss_down_weights_easy_examples_more_than_hard_ones():
    target = torch.tensor([0])
    easy, hard = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    fl, ce = focal_loss(2.0), torch.nn.CrossEntropyLoss()
    assert fl(easy, target) / ce(easy, target) < 0.01
    assert fl(hard, target) / ce(hard, target) > 0.6


def test_balanced_class_weights_follow_n_over_classes_times_count():
    assert balanced_class_weights([8, 2]) == [0.625, 2.5]
    assert balanced_class_weights([8, 2, 0]) == [0.625, 2.5, 0.0]  # absent class: no weight, no division


def test_build_criterion_follows_the_recipe():
    ce = build_criterion(FinetuneConfig(label_smoothing=0.2))
    assert isinstance(ce, torch.nn.CrossEntropyLoss) and ce.label_smoothing == 0.2 and ce.weight is None
    weighted = build_criterion(FinetuneConfig(class_weights="balanced"), [6, 2])
    torch.testing.assert_close(weighted.weight, torch.tensor([2 / 3, 2.0]))
    focal = build_criterion(FinetuneConfig(loss="focal", focal_gamma=1.5, class_weights="balanced"), [6, 2])
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5
    torch.testing.assert_close(focal.weight, torch.tensor([2 / 3, 2.0]))
    assert focal.to("meta").weight.device.type == "meta"  # the weight moves with .to(device)


def test_balanced_sampler_draws_classes_evenly_and_reproducibly():
    labels = [0] * 900 + [1] * 100
    draws = list(balanced_sampler(labels, seed=3))
    assert len(draws) == 1000
    share = Counter(labels[i] for i in draws)[1] / len(draws)
    assert 0.45 < share < 0.55
    assert draws == list(balanced_sampler(labels, seed=3))


def test_grad_clip_norm_bounds_each_update():
    def one_step(clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 3)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        data = [(100 * torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))]
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        train_one_epoch(
            model, data, torch.nn.CrossEntropyLoss(), opt, None, torch.device("cpu"), grad_clip_norm=clip
        )
        return float((torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm())

    assert one_step(0.01) == pytest.approx(0.01, rel=1e-3)
    assert one_step(None) > 1.0


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"finetune": {"loss": "bce"}}, r"finetune\.loss: 'bce' is not one of 'ce' or 'focal'"),
        ({"finetune": {"focal_gamma": 1.0}}, r"finetune: focal_gamma is only used with loss: focal"),
        ({"finetune": {"class_weights": "inverse"}}, r"finetune\.class_weights: 'inverse' is not one of"),
        ({"finetune": {"grad_clip_norm": 0}}, r"finetune\.grad_clip_norm: must be > 0"),
        ({"qat": {"loss": "focal", "focal_gamma": -1}}, r"qat\.focal_gamma: must be >= 0"),
        ({"data": {**BASE["data"], "sampler": "weighted"}}, r"data\.sampler: 'weighted' is not one of"),
    ],
)
def test_recipe_rejects_bad_loss_and_sampler_keys(recipe, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, **recipe})


@pytest.mark.slow  # trains through the pipeline
def test_finetune_and_qat_train_an_imbalanced_set_with_focal_loss_weights_sampler_and_clipping(
    tmp_path, caplog
):
    root = make_imagefolder(tmp_path / "photos", classes=3, per_class=4, size=32)
    make_imagefolder(tmp_path / "more", classes=1, per_class=16, size=32, seed=1)
    for i, f in enumerate(sorted((tmp_path / "more" / "class_0").iterdir())):
        f.rename(root / "class_0" / f"extra_{i:02d}.png")  # class_0: 20 images, the others 4
    options = {"loss": "focal", "focal_gamma": 2.0, "class_weights": "balanced", "grad_clip_norm": 1.0}
    recipe = parse_recipe(
        tiny_recipe(
            root,
            stages=["finetune", "qat"],
            data={"sampler": "balanced"},
            finetune={"epochs": 1, **options},
            qat={"epochs": 1, **options},
        )
    )
    build(recipe, tmp_path / "out")
    run = tmp_path / "out" / recipe.name
    for stage in ("finetune", "qat"):
        manifest = json.loads((run / stage / "manifest.json").read_text())
        assert manifest["config"]["data"]["sampler"] == "balanced"
        assert {k: manifest["config"][stage][k] for k in options} == options
        assert 0 <= manifest["metrics"]["test_top1"] <= 100
    assert "corrected twice" in caplog.text

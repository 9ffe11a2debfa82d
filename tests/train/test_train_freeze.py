"""Freezing the first backbone blocks, gradual unfreezing, and the same count in QAT (train.freeze)."""

import json
import logging

import pytest
import torch

from edgepipe.errors import ModelError, RecipeError
from edgepipe.models.build import build_model
from edgepipe.models.checkpoint import read_checkpoint
from edgepipe.models.registry import get_spec
from edgepipe.pipeline import build
from edgepipe.quant.qat import prepare_qat
from edgepipe.recipe import ModelConfig, parse_recipe
from edgepipe.train import freeze as freeze_mod
from edgepipe.train.freeze import Freezer, freezer_for
from edgepipe.train.loop import train_one_epoch
from tests.conftest import make_imagefolder, tiny_recipe

BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}
ARCH = "mobilenet_v3_large"


def _model(quantizable=False):
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(width_mult=0.25, bn_momentum=0.5), 3, quantizable=quantizable)
    return model


def _trains(module) -> bool:
    return all(p.requires_grad for p in module.parameters())


def test_trainable_last_freezes_all_but_the_last_blocks_and_keeps_the_head_trainable():
    model = _model()
    assert len(get_spec(ARCH).blocks(model)) == len(model.features) == 17
    freezer = freezer_for(model, ARCH, 2)
    assert [_trains(b) for b in model.features] == [False] * 15 + [True] * 2
    assert _trains(model.classifier)
    assert freezer.frozen == list(model.features)[:15]
    assert freezer_for(model, ARCH, "all") is None  # nothing to freeze: no freezer


def test_frozen_blocks_keep_their_weights_and_batchnorm_statistics_while_training():
    model = _model()
    freezer = freezer_for(model, ARCH, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    train_one_epoch(
        model, data, torch.nn.CrossEntropyLoss(), opt, None, torch.device("cpu"), keep_eval=freezer.frozen
    )
    after = model.state_dict()
    frozen_keys = [k for k in before if k.startswith("features.") and int(k.split(".")[1]) < 16]
    assert frozen_keys and all(torch.equal(before[k], after[k]) for k in frozen_keys)  # incl. running_mean
    assert not torch.equal(before["features.16.1.running_mean"], after["features.16.1.running_mean"])
    assert not torch.equal(before["classifier.3.weight"], after["classifier.3.weight"])
    assert all(not m.training for b in freezer.frozen for m in b.modules())
    assert model.features[16].training


def test_schedule_unfreezes_more_blocks_from_given_epochs():
    blocks = [torch.nn.Linear(2, 2) for _ in range(6)]
    freezer = Freezer(blocks, 1, {2: 3, 4: "all"})
    frozen = []
    for epoch in range(5):
        freezer.apply(epoch)
        frozen.append(sum(not b.weight.requires_grad for b in blocks))
    assert frozen == [5, 5, 3, 3, 0]


def test_counts_beyond_the_architectures_blocks_are_one_line_errors(monkeypatch):
    with pytest.raises(
        ModelError, match=r"model\.freeze\.trainable_last: 20 blocks, but mobilenet_v3_large has 17"
    ):
        freezer_for(_model(), ARCH, 20)
    with pytest.raises(ModelError, match=r"schedule epoch 3\): 18 blocks"):
        freezer_for(_model(), ARCH, 2, {3: 18})
    spec = get_spec(ARCH)
    monkeypatch.setattr(freeze_mod, "get_spec", lambda name: type(spec)(**{**spec.__dict__, "blocks": None}))
    with pytest.raises(ModelError, match="does not list its blocks"):
        freezer_for(_model(), ARCH, 2)


def test_the_same_count_freezes_the_same_blocks_of_the_fused_qat_twin():
    model = prepare_qat(_model(quantizable=True))
    freezer = freezer_for(model, ARCH, 3, key="qat.trainable_last")
    assert [_trains(b) for b in model.features] == [False] * 14 + [True] * 3
    model.train()
    freezer.hold_eval()
    convbn = model.features[0][0]  # a fused ConvBn2d: its BatchNorm must use running statistics
    assert type(convbn).__name__ == "ConvBn2d" and not convbn.bn.training
    assert model.features[16][0].bn.training


@pytest.mark.parametrize(
    ("freeze", "message"),
    [
        (
            {"trainable_last": -1},
            r"model\.freeze\.trainable_last: must be a whole number of blocks >= 0 or 'all'",
        ),
        ({"trainable_last": "most"}, r"model\.freeze\.trainable_last: must be a whole number"),
        (
            {"trainable_last": 4, "schedule": {10: 2}},
            r"model\.freeze: schedule epoch 10 trains 2 block\(s\), fewer",
        ),
        ({"schedule": {10: 4}}, r"model\.freeze: schedule unfreezes blocks but trainable_last is 'all'"),
        ({"trainable_last": 4, "schedule": {-1: 8}}, r"model\.freeze\.schedule: epoch -1"),
        ({"trainable": 4}, r"model\.freeze\.trainable: unknown key; did you mean 'trainable_last'\?"),
    ],
)
def test_recipe_rejects_bad_freeze_keys(freeze, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, "model": {"freeze": freeze}})


def test_recipe_accepts_a_gradual_unfreezing_schedule_from_yaml_style_keys():
    r = parse_recipe({**BASE, "model": {"freeze": {"trainable_last": 2, "schedule": {10: 8, 20: "all"}}}})
    assert r.model.freeze.schedule == {10: 8, 20: "all"} and r.qat.trainable_last is None


@pytest.mark.slow  # trains through the pipeline
def test_finetune_and_qat_train_only_the_last_blocks(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgepipe.train.freeze")
    root = make_imagefolder(tmp_path / "photos", classes=3, per_class=6, size=32)
    recipe = parse_recipe(
        tiny_recipe(
            root,
            stages=["finetune", "qat"],
            model={"freeze": {"trainable_last": 2, "schedule": {1: 3}}},
            finetune={"epochs": 2, "patience": 5},
            qat={"lr": 0.01},
        )
    )
    build(recipe, tmp_path / "out")
    run = tmp_path / "out" / recipe.name
    initial = _model().state_dict()  # the stage seeds torch with recipe.seed (0) before building
    ft = read_checkpoint(run / "finetune" / "model.pt")["state_dict"]
    qat = read_checkpoint(run / "qat" / "model.pt")["state_dict"]
    assert torch.equal(ft["features.0.0.weight"], initial["features.0.0.weight"])
    assert torch.equal(ft["features.13.block.0.1.running_var"], initial["features.13.block.0.1.running_var"])
    # the schedule released block 14 for epoch 2: it moved if the kept (best-val) weights are epoch 2's
    best_epoch = json.loads((run / "finetune" / "manifest.json").read_text())["metrics"]["best_epoch"]
    moved = not torch.equal(ft["features.14.block.0.0.weight"], initial["features.14.block.0.0.weight"])
    assert moved == (best_epoch == 2)
    assert "epoch 2: training the last 3 of 17 blocks" in caplog.text
    # QAT honours the same trainable_last (2, the schedule is finetune's): block 14 is frozen there
    assert torch.equal(qat["features.14.block.0.0.weight"], ft["features.14.block.0.0.weight"])
    assert not torch.equal(qat["features.16.0.weight"], ft["features.16.0.weight"])
    m = json.loads((run / "qat" / "manifest.json").read_text())
    assert m["config"]["trainable_last"] == 2 and m["metrics"]["freeze"]["blocks"] == 17
    assert m["metrics"]["freeze"]["trainable_params"] < m["metrics"]["freeze"]["total_params"]

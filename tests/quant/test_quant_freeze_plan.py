"""QAT's freeze schedule is safe for any epoch count, and a freeze epoch that never arrives is a warning."""

from __future__ import annotations

from edgepipe.quant.qat import freeze_plan
from edgepipe.recipe import parse_recipe


def test_default_observer_freeze_is_reached_by_any_epoch_count():
    assert freeze_plan(1, 0, None) == (0, 0, [])
    assert freeze_plan(2, 0, None) == (0, 1, [])
    assert freeze_plan(10, 0, None) == (0, 2, [])


def test_a_freeze_epoch_that_never_arrives_is_warned_and_kept():
    bn, obs, notes = freeze_plan(1, 1, 2)
    assert (bn, obs) == (1, 2) and len(notes) == 2
    assert notes[1].startswith("qat.freeze_observer_epoch 2 never arrives in 1 epoch(s)")
    assert "fix: set qat.freeze_observer_epoch below qat.epochs (1)" in notes[1]
    assert freeze_plan(0, 0, None)[2] == []  # no QAT epochs: nothing to warn about


def test_recipe_defaults_keep_finetuned_batchnorm_and_auto_observer_epoch():
    cfg = parse_recipe({"name": "r", "data": {"dataset": "fashion-mnist"}}).qat
    assert cfg.freeze_bn_epoch == 0 and cfg.freeze_observer_epoch is None

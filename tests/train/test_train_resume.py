"""build --resume: a killed finetune or qat continues to exactly the uninterrupted result."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
import yaml

from edgepipe.models.checkpoint import read_checkpoint
from edgepipe.pipeline import build
from edgepipe.recipe import load_recipe
from edgepipe.train.resume import ResumeState, partial_dir
from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = pytest.mark.slow


class Killed(Exception):
    """Stands in for SIGKILL: raised right after an epoch's state is on disk."""


def _recipe(tmp_path, data):
    recipe = tiny_recipe(
        data,
        stages=["finetune", "qat"],
        # fixed speed settings: the straight run and the killed one must not measure their way to different
        # (float-noise-different) layouts; a resumed run reuses the killed run's choice whatever it was
        finetune={"epochs": 3, "patience": 3, "channels_last": "off", "compile": "off", "amp": "off"},
        # the freezes happen at epoch 1, i.e. right at the resumed epoch: they must be re-applied
        qat={"epochs": 2, "freeze_bn_epoch": 1, "freeze_observer_epoch": 1, "patience": 2,
             "channels_last": "off", "compile": "off"},
    )
    recipe["data"]["augment"] = {"hflip": True, "rrc_scale": [0.7, 1.0]}  # RNG in the data path
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_recipe(path)


def _kill_after(monkeypatch, stage: str, epoch: int) -> None:
    save = ResumeState.save

    def save_then_die(self, state):
        save(self, state)
        if self.stage == stage and state["epoch"] == epoch:
            raise Killed(f"{stage} killed after epoch {epoch}")

    monkeypatch.setattr(ResumeState, "save", save_then_die)


def _weights(run_dir, stage):
    return read_checkpoint(run_dir / stage / "model.pt")["state_dict"]


def _history(run_dir):
    with open(run_dir / "finetune" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in ("seconds", "data_wait_s")} for row in rows]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_killed_finetune_and_qat_resume_to_the_uninterrupted_result(tmp_path, monkeypatch, caplog):
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=20, size=32)
    recipe = _recipe(tmp_path, data)
    build(recipe, tmp_path / "straight")
    straight = tmp_path / "straight" / "tiny"

    out = tmp_path / "killed"
    run = out / "tiny"
    with monkeypatch.context() as m:
        _kill_after(m, "finetune", 1)
        with pytest.raises(Killed):
            build(recipe, out)
    assert not (run / "finetune").exists(), "a killed stage must not be published"
    assert (partial_dir(run / "finetune") / "state.pt").exists()

    with monkeypatch.context() as m:
        _kill_after(m, "qat", 1)
        with pytest.raises(Killed), caplog.at_level(logging.INFO):
            build(recipe, out, resume=True)
    assert "finetune: resuming after epoch 1/3" in caplog.text
    assert not partial_dir(run / "finetune").exists(), "a published stage's state is removed"
    assert (partial_dir(run / "qat") / "state.pt").exists() and not (run / "qat").exists()

    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = build(recipe, out, resume=True)
    assert "qat: resuming after epoch 1/2" in caplog.text
    assert status["finetune"]["cached"] and not status["qat"]["cached"]
    assert not partial_dir(run / "qat").exists()

    assert _history(run) == _history(straight) and len(_history(run)) == 3
    _assert_same_weights(_weights(run, "finetune"), _weights(straight, "finetune"))
    _assert_same_weights(_weights(run, "qat"), _weights(straight, "qat"))
    for stage in ("finetune", "qat"):
        ours = yaml.safe_load((run / stage / "manifest.json").read_text())["metrics"]
        theirs = yaml.safe_load((straight / stage / "manifest.json").read_text())["metrics"]
        assert ours["val_top1"] == theirs["val_top1"] and ours["test_top1"] == theirs["test_top1"]
    qat_speed = yaml.safe_load((run / "qat" / "manifest.json").read_text())["metrics"]["speed"]
    assert qat_speed["source"] == "resumed" and qat_speed["chosen"] == "nchw-fp32"


def _saved(folder, key="k1"):
    ResumeState(folder, key, "finetune", resume=False).save(
        {"epoch": 2, "epochs": 5, "world_size": 1, "model": {}}
    )


def test_without_resume_a_saved_state_is_named_and_training_starts_fresh(tmp_path, caplog):
    _saved(tmp_path)
    with caplog.at_level(logging.INFO):
        assert ResumeState(tmp_path, "k1", "finetune", resume=False).state is None
    assert "left training state after epoch 2/5" in caplog.text and "add --resume" in caplog.text


def test_resume_loads_only_a_state_written_under_the_same_cache_key(tmp_path, caplog):
    _saved(tmp_path, key="k1")
    assert ResumeState(tmp_path, "k1", "finetune", resume=True).state["epoch"] == 2
    with caplog.at_level(logging.INFO):
        assert ResumeState(tmp_path, "k2", "finetune", resume=True).state is None
    assert "different recipe" in caplog.text and "starting fresh" in caplog.text


def test_resume_without_a_state_starts_fresh_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert ResumeState(tmp_path / "none", "k1", "qat", resume=True).state is None
    assert "qat: no saved training state to resume" in caplog.text

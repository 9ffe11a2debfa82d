"""DDP under torchrun (gloo on CPU), and the single-process path it must leave alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgepipe.errors import RecipeError
from edgepipe.models.checkpoint import read_checkpoint
from edgepipe.recipe import parse_recipe
from edgepipe.train import distributed
from tests.conftest import make_imagefolder, tiny_recipe

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_single_process_is_plain_training(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    from edgepipe.stages import finetune, qat

    model = torch.nn.Linear(2, 2)
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.all_reduce_sums(3.0, 1.5) == (3.0, 1.5)
    assert distributed.broadcast_object({"top1": 1.0}) == {"top1": 1.0}
    with distributed.session():  # no process group without torchrun
        assert not torch.distributed.is_initialized()
    recipe = parse_recipe(tiny_recipe("photos"))
    # cache keys of single-process runs are what they were before DDP existed
    assert "processes" not in finetune.config(recipe) and "processes" not in qat.config(recipe)


def test_balanced_sampler_under_ddp_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match="data.sampler: balanced is not supported under torchrun.*fix:"):
        distributed.train_sampler(list(range(8)), 0, "balanced")


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_torchrun_two_processes_train_finetune_and_qat_with_ddp(tmp_path):
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=12, size=32)
    recipe = tiny_recipe(
        data,
        name="ddp",
        stages=["finetune", "qat"],
        finetune={"epochs": 1},
        qat={"epochs": 1, "max_batches_per_epoch": 2, "calibration_batches": 1},
    )
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "EDGEPIPE_PROGRESS": "0"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "edgepipe.cli", "build", str(path),
           "--out", str(tmp_path / "out")]
    # ~35 s on 2 busy cores; the timeout only guards against a hang (e.g. ranks out of step)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("stages run: split, finetune, qat") == 1, "only rank 0 reports"
    run = tmp_path / "out" / "ddp"
    left = sorted(p.name for p in run.iterdir() if not p.name.startswith(".build.lock"))  # the lock stays
    assert left == ["finetune", "qat", "split"], "no temp or partial left"
    for stage in ("finetune", "qat"):
        manifest = json.loads((run / stage / "manifest.json").read_text())
        assert manifest["metrics"]["processes"] == 2 and manifest["config"]["processes"] == 2
    from edgepipe.models.build import build_model, load_qat_model
    from edgepipe.recipe import ModelConfig

    ckpt = read_checkpoint(run / "finetune" / "model.pt")
    model, _ = build_model(ModelConfig(**{**ckpt["model_cfg"], "pretrained": "none"}), ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])  # plain keys: rank 0 saved the module, not the DDP wrapper
    load_qat_model(read_checkpoint(run / "qat" / "model.pt"))

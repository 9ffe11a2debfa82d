"""The GPU path: CUDA training with AMP and channels-last, and DDP over NCCL. Run by `make gpu-check` on a
machine with CUDA (skipped elsewhere): the CPU suite cannot exercise any of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import make_imagefolder, tiny_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _recipe(tmp_path: Path, name: str, **over) -> Path:
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=24, size=32)
    base = {"finetune": {"epochs": 2, "amp": "on", "channels_last": "on"},
            "qat": {"epochs": 1, "max_batches_per_epoch": 3, "channels_last": "on"}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    recipe = tiny_recipe(data, name=name, **base)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _build(cmd: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "EDGEPIPE_PROGRESS": "0", **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_cuda_build_with_amp_and_channels_last_runs_every_stage(tmp_path):
    path = _recipe(tmp_path, "gpu")
    out = tmp_path / "out"
    _build([sys.executable, "-m", "edgepipe.cli", "build", str(path), "--out", str(out)], tmp_path)
    run = tmp_path / "out" / "gpu"
    finetune = json.loads((run / "finetune" / "manifest.json").read_text())
    assert "cuda" in json.dumps(finetune["metrics"]).lower(), "finetune did not record a CUDA device"
    report = json.loads((run / "report.json").read_text())
    assert report["rows"], "the bench stage wrote no rows"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_ddp_over_nccl_on_every_gpu(tmp_path):
    n = torch.cuda.device_count()
    path = _recipe(tmp_path, "ddp", stages=["finetune", "qat"])
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={n}", "-m", "edgepipe.cli", "build", str(path),
           "--out", str(tmp_path / "out")]
    proc = _build(cmd, tmp_path)
    assert proc.stdout.count("stages run: split, finetune, qat") == 1, "only rank 0 reports"
    for stage in ("finetune", "qat"):
        manifest = json.loads((tmp_path / "out" / "ddp" / stage / "manifest.json").read_text())
        assert manifest["metrics"]["processes"] == n


def test_cuda_finetune_compiled_with_autotuned_defaults(tmp_path):
    """torch.compile on CUDA (inductor + Triton) through finetune and qat, and the default ``auto``
    settings, which on CUDA time their candidates on the GPU and record the choice."""
    compiled = _recipe(tmp_path, "compiled", stages=["finetune", "qat"],
                       finetune={"epochs": 1, "amp": "on", "channels_last": "on", "compile": "on"})
    _build([sys.executable, "-m", "edgepipe.cli", "build", str(compiled), "--out", str(tmp_path / "out")],
           tmp_path)
    manifest = json.loads((tmp_path / "out" / "compiled" / "finetune" / "manifest.json").read_text())
    assert manifest["metrics"]["speed"]["compile"] is True, manifest["metrics"]["speed"]
    auto = _recipe(tmp_path, "auto", stages=["finetune"],
                   finetune={"epochs": 1, "amp": "auto", "channels_last": "auto", "compile": "auto"})
    _build([sys.executable, "-m", "edgepipe.cli", "build", str(auto), "--out", str(tmp_path / "out")],
           tmp_path, EDGEPIPE_AUTOTUNE_CACHE="off")
    manifest = json.loads((tmp_path / "out" / "auto" / "finetune" / "manifest.json").read_text())
    speed = manifest["metrics"]["speed"]
    assert speed["source"] == "measured" and speed["timings"], speed

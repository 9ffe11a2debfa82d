"""benchmarks/train_throughput.py runs end to end on a tiny ImageFolder recipe; its report is per CPU."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from edgepipe.bench.timing import cpu_name
from tests.conftest import AUTOTUNE, load_script, tiny_recipe


def _load():
    return load_script("train_throughput")


@pytest.mark.slow
def test_train_throughput_times_plain_ours_and_each_candidate_on_finetune_and_qat(tmp_path, imagefolder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(imagefolder, **AUTOTUNE)))  # "ours": autotune's choice
    out = tmp_path / "out"
    args = ["--recipe", str(recipe), "--rounds", "2", "--batches-per-round", "1", "--warmup-batches", "1"]
    threads = torch.get_num_threads()
    try:
        doc = _load().main([*args, "--no-compile", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide count
    assert set(doc["stages"]) == {"finetune", "qat"}
    for stage in doc["stages"].values():
        assert {"plain", "ours", "nchw-fp32", "channels-last"} <= set(stage["loops"])
        assert all(len(loop["rounds"]) == 2 and loop["images_per_s"] > 0 for loop in stage["loops"].values())
        assert stage["autotune"]["chosen"] in stage["loops"] and stage["best_single"] in stage["loops"]
        assert stage["ours_vs_plain"] > 0
    assert not any("bf16" in name for name in doc["stages"]["qat"]["loops"])  # QAT trains in float32
    assert doc["cpu_slug"] == cpu_name()  # e.g. amd-epyc-zen5: one results file per CPU
    written = json.loads((out / f"train_throughput_{doc['cpu_slug']}.json").read_text())
    assert written["cpu"]["model_name"] and "isa_flags" in written["environment"]
    assert "| ours |" in (out / f"train_throughput_{doc['cpu_slug']}.md").read_text()

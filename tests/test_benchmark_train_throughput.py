"""benchmarks/train_throughput.py runs end to end on a tiny ImageFolder recipe and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import yaml

from tests.conftest import tiny_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_throughput_alternates_both_loops_and_writes_json_and_markdown(tmp_path, imagefolder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(imagefolder)))
    out = tmp_path / "out"
    args = ["--recipe", str(recipe), "--image-size", "32", "--batch-size", "8", "--batches", "4"]
    args += ["--rounds", "2"]
    threads = torch.get_num_threads()
    try:
        doc = _load().main([*args, "--warmup-batches", "1", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide count
    order = [(r["round"], r["loop"]) for r in doc["rounds"]]
    assert order == [(0, "ours"), (0, "plain"), (1, "plain"), (1, "ours")]  # ABBA
    for loop in ("ours", "plain"):
        s = doc["summary"][loop]
        assert s["images_per_s"] > 0 and 0 <= s["data_wait_fraction"] < 1
    assert doc["verdict"]["ratio"] > 0 and doc["environment"]["cpu_model"]
    assert json.loads((out / "train_throughput.json").read_text())["settings"]["batches"] == 4
    assert "| ours |" in (out / "train_throughput.md").read_text()

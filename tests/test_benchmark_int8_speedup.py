"""benchmarks/int8_speedup.py: every speed-up names its baseline (the runtime's fastest float mode), both the
p50 and the paired per-round estimate must meet a target, OpenVINO INT8 runs as our loaders load it, and a
model a runtime rejects is a failed row; the timing itself is the measurement core's (tests/bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgepipe.bench.rows import add_relative, baseline_policy
from tests.conftest import load_script


def _load():
    return load_script("int8_speedup")


def _row(model, runtime, mode, p50, rounds=None, batch=1):
    """A row as measure() writes it, with the script's extra keys."""
    precision = mode if runtime == "openvino" else None
    return {
        "model": model, "runtime": runtime, "precision": precision, "mode": mode, "batch_size": batch,
        "runtime_label": f"{runtime}-{precision}" if precision else runtime, "top1": 90.0,
        "agreement": 0.996, "latency": {"p50_ms": p50, "round_medians_ms": rounds},
    }  # fmt: skip


def _relative(mod, rows):
    add_relative(rows, baseline_policy(["fp32"]))  # as measure() does for the script's entries
    mod.add_vs_f32(rows)


def test_speedups_divide_by_the_fastest_float_and_name_it():
    mod = _load()
    a, b, c = _row("fp32", "openvino", "f32", 3.0), _row("fp32", "openvino", "bf16", 2.0), _row(
        "int8-qat", "openvino", "auto", 1.0)
    d, e = _row("fp32", "onnxruntime", "f32", 4.0), _row("int8-qat", "onnxruntime", "f32", 2.0)
    _relative(mod, [a, b, c, d, e])
    assert c["speedup_vs_f32"] == 3.0 and c["speedup"] == 2.0
    assert "2.00x vs openvino bf16" in mod._speedup_cell(c)
    assert e["speedup"] == e["speedup_vs_f32"] == 2.0
    assert "vs onnxruntime f32" in mod._speedup_cell(e)
    assert a["speedup"] == 2.0 / 3.0  # f32 itself is slower than bf16 here


def test_modes_give_fp32_every_native_float_and_int8_the_shipped_load():
    mod = _load()
    native = {"onnxruntime": ["f32"], "openvino": ["f32", "bf16"]}
    assert mod.modes("onnxruntime", "int8-qat", native) == [("f32", {})]
    assert [m for m, _ in mod.modes("openvino", "fp32", native)] == ["f32", "bf16"]
    assert [m for m, _ in mod.modes("openvino", "int8-qat", native)] == ["auto", "f32"]
    assert [m for m, _ in mod.modes("openvino", "int8-ptq-nncf", native)] == ["auto"]
    assert [m for m, _ in mod.modes("openvino", "fp32", {"openvino": ["f32"]})] == ["f32"]


def test_entries_are_scored_once_against_their_torch_twin_and_a_rejected_model_is_a_failed_row():
    mod = _load()
    twin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = np.random.default_rng(0).standard_normal((6, 3, 2, 2), dtype=np.float32)
    y = torch_pred = twin(torch.from_numpy(x)).argmax(1).numpy()
    built: list[tuple] = []

    class Fake:
        options: dict = {}

        def predict(self, batch):
            return twin(torch.from_numpy(batch)).detach().numpy()

    def load(runtime, path, threads, **opts):
        built.append((runtime, path.name, opts.get("precision")))
        if path.name == "bad.xml":
            raise RuntimeError("unsupported op\nmore")
        return Fake()

    paths = {"fp32": {"onnxruntime": Path("f.onnx"), "openvino": Path("f.xml")},
             "int8-qat": {"onnxruntime": Path("q.onnx"), "openvino": Path("bad.xml")}}
    exported = mod.Exported(paths, None, {"fp32": twin, "int8-qat": twin}, {"int8-ptq-nncf": "no nncf"}, {})
    native = {"onnxruntime": ["f32"], "openvino": ["f32", "bf16"]}
    todo, extras, failed = mod.entries(exported, x, y, 2, native, load=load)
    assert [(e.model, e.runtime, e.precision) for e in todo] == [
        ("fp32", "onnxruntime", None), ("fp32", "openvino", "f32"), ("fp32", "openvino", "bf16"),
        ("int8-qat", "onnxruntime", None)]
    assert {(f["model"], f["mode"]) for f in failed} == {("int8-ptq-nncf", "-"), ("int8-qat", "auto"),
                                                          ("int8-qat", "f32")}
    assert next(f for f in failed if f["mode"] == "auto")["error"] == "RuntimeError: unsupported op"
    scores = todo[0].score(None)
    assert scores["top1"] == 100.0 and scores["agreement"] == 1.0 and (torch_pred == y).all()
    assert len(built) == 6  # each entry loaded once here; measure() builds its own
    assert extras[("fp32", "openvino", "bf16")]["mode"] == "bf16"


def test_targets_use_the_fastest_float_and_nncf():
    mod = _load()
    rows = [_row("fp32", "openvino", "f32", 3.0), _row("fp32", "openvino", "bf16", 2.0),
            _row("int8-qat", "openvino", "auto", 1.0), _row("int8-ptq-nncf", "openvino", "auto", 0.9)]
    _relative(mod, rows)
    lines = mod.targets({"rows": rows}, 224, trained=True)
    want = "1.5x faster than the fastest float (openvino bf16): 2.00x (p50s), 2.00x (paired per round) -> met"
    assert any(want in ln for ln in lines), lines
    assert any("faster than NNCF's INT8: 1.000 vs 0.900 ms -> NOT met" in ln for ln in lines)
    assert any("99.5%: 99.60% -> met" in ln for ln in lines)


def test_paired_ratios_cancel_drift_between_rounds_and_both_estimates_must_meet_a_target():
    """The host slowed down halfway (every model 2x slower in rounds 3-5): within each round INT8 is 1.2x
    faster, and the paired estimate says so; a p50 ratio at the target does not make it met alone."""
    mod = _load()
    f = _row("fp32", "onnxruntime", "f32", 1.8, [1.2, 1.2, 1.2, 2.4, 2.4, 2.4])
    q = _row("int8-qat", "onnxruntime", "f32", 1.5, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    _relative(mod, [f, q])
    assert abs(q["speedup_paired"] - 1.2) < 1e-9
    assert np.allclose(q["speedup_paired_iqr"], [1.2, 1.2])
    # p50s: 1.8 / 1.2 = 1.5x (the target); within rounds 1.2x and 1.71x, median 1.46x: not met
    q = _row("int8-qat", "onnxruntime", "f32", 1.2, [1.0, 1.0, 1.0, 1.4, 1.4, 1.4])
    _relative(mod, [f, q])
    assert abs(q["speedup"] - 1.5) < 1e-9
    lines = mod.targets({"rows": [f, q]}, 224, trained=False)
    assert any("1.50x (p50s), 1.46x (paired per round) -> NOT met" in ln for ln in lines), lines

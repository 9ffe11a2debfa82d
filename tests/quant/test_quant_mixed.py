"""Mixed precision for ONNX Runtime: convolutions kept in float by name, chosen from a per-layer profile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgepipe.errors import RecipeError
from edgepipe.quant.export import export_onnx
from edgepipe.quant.mixed import apply_float_layers, choose_float_layers, profile_layers, quantized_convs
from edgepipe.recipe import parse_recipe
from tests.conftest import calibrated_qdq_mnv3

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "int8.onnx"
    return export_onnx(calibrated_qdq_mnv3(), path, [3, 32, 32], {}, 17, qdq=True)


def _run(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, dict]:
    import tempfile
    from collections import Counter

    so = ort.SessionOptions()
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = f"{d}/opt.onnx"
        off = ["WeightBiasQuantization"]
        sess = ort.InferenceSession(model.SerializeToString(), so, disabled_optimizers=off)
        out = sess.run(None, {"input": x})[0]
        ops = Counter(n.op_type for n in onnx.load(f"{d}/opt.onnx").graph.node)
    return out, ops


def test_float_layers_run_as_float_convs_with_the_same_function(int8_onnx):
    model = onnx.load(str(int8_onnx))
    convs = quantized_convs(model)
    assert len(convs) > 10
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    ref, ops_ref = _run(model, x)
    pick = [c for c in convs if "features.1/" in c]
    assert apply_float_layers(model, pick) == pick
    out, ops = _run(model, x)
    assert ops["QLinearConv"] == ops_ref["QLinearConv"] - len(pick)
    assert ops_ref.get("Conv", 0) + ops_ref.get("FusedConv", 0) < ops.get("Conv", 0) + ops.get("FusedConv", 0)
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max() + 1e-3  # only accumulator rounding differs
    with pytest.raises(KeyError, match="no Conv node named 'nope'"):
        apply_float_layers(model, ["nope"])


def test_our_ort_loader_honours_the_models_disabled_optimizers(int8_onnx, tmp_path):
    from edgepipe.quant.mixed import METADATA_KEY
    from edgepipe.runtimes.onnxruntime import disabled_optimizers, ort_op_account

    model = onnx.load(str(int8_onnx))
    pick = [c for c in quantized_convs(model) if "features.1/" in c]
    apply_float_layers(model, pick)
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, '["WeightBiasQuantization"]'
    marked = tmp_path / "marked.onnx"
    onnx.save(model, str(marked))
    assert disabled_optimizers(plain) == [] and disabled_optimizers(marked) == ["WeightBiasQuantization"]
    x = np.zeros((1, 3, 32, 32), np.float32)
    n_plain = ort_op_account(plain, 1, x, runs=1)["optimized_op_counts"]["QLinearConv"]
    n_marked = ort_op_account(marked, 1, x, runs=1)["optimized_op_counts"]["QLinearConv"]
    assert n_marked == n_plain - len(pick)  # ORT re-quantizes the float layers unless told not to


def test_profile_times_each_quantized_conv_both_ways(int8_onnx):
    prof = profile_layers(int8_onnx, [3, 32, 32], threads=1, rounds=1, iters=2)
    assert set(prof) <= set(quantized_convs(onnx.load(str(int8_onnx)))) and len(prof) > 10
    assert any(p["group"] > 1 for p in prof.values())  # the depthwise convolutions are there
    assert all(p["int8_ms"] > 0 and p["float_ms"] > 0 and p["out_channels"] > 0 for p in prof.values())


def test_choice_needs_a_clear_float_win():
    prof = {"a": {"int8_ms": 1.0, "float_ms": 0.5}, "b": {"int8_ms": 1.0, "float_ms": 0.95},
            "c": {"int8_ms": 1.0, "float_ms": 2.0}}  # fmt: skip
    assert choose_float_layers(prof) == ["a"]


def test_recipe_float_layers_accepts_auto_or_names():
    base = {"name": "r", "data": {"dataset": "fashion-mnist"}, "model": {"arch": "mobilenet_v3_large"}}
    assert parse_recipe(base).export.float_layers == ()
    assert parse_recipe({**base, "export": {"float_layers": "auto"}}).export.float_layers == "auto"
    assert parse_recipe({**base, "export": {"float_layers": ["/a/Conv"]}}).export.float_layers == ("/a/Conv",)
    with pytest.raises(RecipeError, match="float_layers"):
        parse_recipe({**base, "export": {"float_layers": "all"}})


def test_write_float_layers_marks_the_model_and_writes_nothing_for_an_unknown_layer(int8_onnx, tmp_path):
    from edgepipe.quant.mixed import write_float_layers
    from edgepipe.runtimes.onnxruntime import disabled_optimizers

    pick = [c for c in quantized_convs(onnx.load(str(int8_onnx))) if "features.1/" in c]
    out = tmp_path / "mixed.onnx"
    assert write_float_layers(int8_onnx, out, pick) == pick
    assert disabled_optimizers(out) == ["WeightBiasQuantization"]
    assert set(pick).isdisjoint(quantized_convs(onnx.load(str(out))))
    with pytest.raises(KeyError):
        write_float_layers(int8_onnx, tmp_path / "bad.onnx", ["nope"])
    assert not (tmp_path / "bad.onnx").exists()

"""model.variant: minimalistic (MobileNetV3-Large/Small, the paper's INT8-friendly table): the block table,
its quantizable twin, an INT8 graph in which ONNX Runtime runs every conv with its ReLU as one integer op,
fewer MACs than the standard model, and the recipe / plan refusals. Tiny inputs, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgepipe.bench.macs import count_macs
from edgepipe.errors import RecipeError
from edgepipe.models.build import build_model
from edgepipe.quant.export import export_onnx
from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
from edgepipe.quant.qdq import to_qdq_module
from edgepipe.recipe import ModelConfig, parse_recipe

ARCHS = ["mobilenet_v3_large", "mobilenet_v3_small"]


def _cfg(arch: str, variant: str = "minimalistic", **kw) -> ModelConfig:
    return ModelConfig(arch=arch, variant=variant, pretrained="none", bn_momentum=1.0, **kw)


def _blocks(model) -> list:
    return [b for b in model.features if hasattr(b, "block")]


@pytest.mark.parametrize("arch", ARCHS)
def test_minimalistic_table_is_the_standard_one_without_se_hswish_and_5x5(arch):
    std, _ = build_model(_cfg(arch, "standard"), 10)
    mini, _ = build_model(_cfg(arch), 10)
    kinds = {type(m).__name__ for m in mini.modules()}
    assert not kinds & {"Hardswish", "Hardsigmoid", "SqueezeExcitation"}, kinds
    assert {"Hardswish", "SqueezeExcitation"} <= {type(m).__name__ for m in std.modules()}
    depthwise = [m for m in mini.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.kernel_size == (3, 3) for m in depthwise)
    # the same channels, expansions and strides: only SE, activations and the 5x5 kernels differ
    assert [b.out_channels for b in _blocks(mini)] == [b.out_channels for b in _blocks(std)]
    assert [m.stride for m in depthwise] == [
        m.stride for m in std.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1
    ]
    assert type(mini.classifier[1]) is torch.nn.ReLU and type(mini.features[0][2]) is torch.nn.ReLU
    n_std, n_mini = (sum(p.numel() for p in m.parameters()) for m in (std, mini))
    assert n_mini < 0.8 * n_std
    mini.train()(torch.randn(2, 3, 32, 32)).sum().backward()  # trains (no in-place op on a ReLU's output)
    assert all(p.grad is not None for p in mini.parameters())


def _trained_bn(model, x):
    with torch.no_grad():
        model.train()(x)  # BatchNorm statistics of x (random init collapses in eval otherwise)
    return model.eval()


def _qat(cfg: ModelConfig, float_model, x):
    q, _ = build_model(cfg, 3, quantizable=True)
    q.load_state_dict(float_model.state_dict())  # the finetune checkpoint loads into the QAT twin
    prepare_qat(q)
    q.eval()
    with torch.no_grad():
        q(x)
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=1e-3)
    torch.nn.functional.cross_entropy(q(x), torch.tensor([0, 1, 2, 0] * (len(x) // 4))).backward()
    opt.step()
    freeze_observers(q)
    freeze_bn_stats(q)
    return q.eval()


def test_int8_graph_runs_every_conv_and_its_relu_as_one_integer_op_in_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    cfg = _cfg("mobilenet_v3_large", width_mult=0.25)
    x = torch.randn(16, 3, 32, 32)
    model = _trained_bn(build_model(cfg, 3)[0], x)
    twin, _ = build_model(cfg, 3, quantizable=True)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), model(x))
    q = _qat(cfg, model, x[:8])
    path = export_onnx(to_qdq_module(q), tmp_path / "int8.onnx", [3, 32, 32], {}, opset=17, qdq=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert not {"HardSwish", "HardSigmoid", "Mul", "BatchNormalization"} & set(ops)
    n_conv = ops.count("Conv")

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    # every conv is an integer conv with its ReLU folded into the output quantization: no float conv, no
    # standalone Relu, and the only float ops left are the global pool's and the head's boundary
    assert optimized.count("QLinearConv") == n_conv, optimized
    assert "Conv" not in optimized and "Relu" not in optimized, optimized
    with torch.no_grad():
        ref = q(x).numpy()
    assert ref.std(0).max() > 0 and np.isfinite(out).all()
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("arch", ARCHS)
def test_minimalistic_counts_fewer_macs_than_the_standard_model_from_the_graph(arch, tmp_path):
    macs = {}
    for variant in ("standard", "minimalistic"):
        model = build_model(_cfg(arch, variant), 10)[0].eval()
        path = export_onnx(model, tmp_path / f"{variant}.onnx", [3, 64, 64], {}, opset=17)
        macs[variant] = count_macs(path)["macs"]
    assert 0.5 * macs["standard"] < macs["minimalistic"] < 0.95 * macs["standard"], macs


def _recipe(model: dict, **over) -> dict:
    return {"name": "r", "data": {"dataset": "fashion-mnist"}, "model": model, **over}


def test_recipe_refuses_an_attention_the_minimalistic_table_has_no_place_for():
    with pytest.raises(RecipeError, match="no place in variant: minimalistic"):
        parse_recipe(_recipe({"variant": "minimalistic", "attention": "eca"}))
    with pytest.raises(RecipeError, match="model.variant"):
        parse_recipe(_recipe({"variant": "tiny"}))


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (
            {"arch": "resnet50", "variant": "minimalistic"},
            "variant: minimalistic is not available for resnet50",
        ),
        ({"variant": "minimalistic", "pretrained": "imagenet"}, "has no ImageNet weights here"),
    ],
)
def test_plan_refuses_minimalistic_where_it_cannot_be_built_before_any_training(model, says):
    from edgepipe.pipeline import plan

    with pytest.raises(RecipeError, match=says):
        plan(parse_recipe(_recipe(model, stages=["finetune"])))


def test_export_counts_the_standard_table_beside_a_variant_and_the_report_notes_the_saving():
    from edgepipe.bench.report import _run_notes
    from edgepipe.stages.export import standard_table_gmacs

    recipe = parse_recipe(_recipe({"variant": "minimalistic", "width_mult": 0.5}))
    ckpt = {"model_cfg": recipe.model.model_dump(), "num_classes": 10}
    std = standard_table_gmacs(ckpt, [3, 64, 64], recipe)
    assert std is not None
    plain = {**ckpt, "model_cfg": {**ckpt["model_cfg"], "variant": "standard"}}
    assert standard_table_gmacs(plain, [3, 64, 64], recipe) is None  # nothing to compare with
    rows = [{"model": "fp32", "runtime": "onnxruntime", "gmacs": 0.9 * std}]
    notes = _run_notes(rows, {"export": {"metrics": {"fp32": {"standard_table_gmacs": std}}}}, {})
    assert any(n.startswith("model.variant: ") and "0.90x the" in n for n in notes), notes

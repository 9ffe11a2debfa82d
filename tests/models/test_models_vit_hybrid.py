"""model.hybrid: vit: the ResNeXt/ResNet with ViT blocks after layer 4 -- shapes, twins, QAT, the INT8
export (integer attention and MLP matmuls in ONNX Runtime, agreement with torch), MAC counts, recipe keys.
32 px, CPU."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from edgepipe.bench.macs import count_macs
from edgepipe.errors import RecipeError
from edgepipe.models.build import build_model
from edgepipe.models.registry import refusal
from edgepipe.models.vit_hybrid import ViTEncoder, feature_grid
from edgepipe.quant.export import export_onnx
from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
from edgepipe.quant.qdq import to_qdq_module
from edgepipe.recipe import ModelConfig, parse_recipe

SIZE = 32
HYBRID = {"arch": "resnext50_32x4d", "hybrid": "vit", "vit_width": 32, "vit_heads": 2, "vit_depth": 2}


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"pretrained": "none", "bn_momentum": 1.0, "dropout": 0.0, **HYBRID, **kw})


def _float_model(cfg: ModelConfig, x: torch.Tensor, size: int = SIZE):
    model, _ = build_model(cfg, 3, image_size=size)
    with torch.no_grad():
        for m in model.modules():  # torchvision's zero_init_residual: an untrained ResNeXt-50 whose residual
            if hasattr(m, "bn3"):  # branches are live turns a one-LSB rounding difference into another class
                m.bn3.weight.zero_()  # (torch flips 1 of 8 between 1 and 2 threads); trained ones don't
        model.train()(x)  # BatchNorm statistics of x (random init collapses in eval otherwise)
    return model.eval()


def _qat_model(cfg: ModelConfig, float_model, x: torch.Tensor, size: int = SIZE):
    q, _ = build_model(cfg, 3, quantizable=True, image_size=size)
    q.load_state_dict(float_model.state_dict())
    prepare_qat(q, example=x[:1])
    q.eval()
    with torch.no_grad():
        q(x)  # observers see data
    freeze_observers(q)
    freeze_bn_stats(q)
    return q.eval()


@pytest.mark.parametrize("size", [32, 64, 100, 224])
def test_feature_grid_is_layer4_side(size):
    model, _ = build_model(_cfg(), 3, image_size=size)
    assert model.vit.grid == feature_grid(size)
    x = torch.zeros(1, 3, size, size)
    m = model.eval()
    f = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
    assert f.shape[-1] == feature_grid(size)
    assert model.vit.pos_embed.shape == (1, feature_grid(size) ** 2 + 1, 32)


def test_hybrid_twins_share_state_dict_and_train():
    torch.manual_seed(0)
    x = torch.randn(4, 3, SIZE, SIZE)
    f, _ = build_model(_cfg(arch="resnet50"), 3, image_size=SIZE)
    q, _ = build_model(_cfg(arch="resnet50"), 3, quantizable=True, image_size=SIZE)
    assert f.state_dict().keys() == q.state_dict().keys()
    assert f.fc[1].in_features == 32 and len(f.vit.blocks) == 2
    loss = f.train()(x).logsumexp(1).mean()
    loss.backward()
    assert f.vit.blocks[0].attn.qkv.weight.grad is not None and f.vit.pos_embed.grad is not None


def test_hybrid_int8_export_runs_matmuls_as_integer(tmp_path):
    """Every product of a block is DQ, DQ -> MatMul|Gemm in the export; ONNX Runtime fuses them into integer
    kernels, and agrees with the QAT torch model."""
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    x = torch.randn(8, 3, SIZE, SIZE)
    cfg = _cfg()
    q = _qat_model(cfg, _float_model(cfg, x), x)
    qdq = to_qdq_module(q)
    with torch.no_grad():
        ref, same = q(x).numpy(), qdq(x).numpy()
    np.testing.assert_allclose(ref, same, atol=1e-5)
    path = tmp_path / "int8.onnx"
    export_onnx(qdq, path, [3, SIZE, SIZE], {}, 17, qdq=True, pad_channels=0)
    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    assert len(products) == 2 * 6 + 1  # six per block, and the head
    for n in products:
        assert all(producers[i].op_type == "DequantizeLinear" for i in n.input[:2]), n.name
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    err = np.abs(out - ref).max()
    assert err <= 0.05 * np.ptp(ref), (err, np.ptp(ref))  # a few output LSBs: rounding, not another model
    top2 = np.sort(ref, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * err  # classes no rounding of this size can swap
    assert clear.sum() >= 6, (ref, err)
    assert (out.argmax(1) == ref.argmax(1))[clear].all()
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QGemm"] >= 2 * 4  # qkv, proj, fc1, fc2 of each block
    assert ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] == 2 * 2  # q.k and attn.v
    assert "MatMul" not in ops and "Gemm" not in ops


def test_hybrid_macs_count_attention_matmuls(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE)
    cfg = _cfg(vit_depth=1)
    model = _float_model(cfg, x)
    path = tmp_path / "fp32.onnx"
    export_onnx(model, path, [3, SIZE, SIZE], {}, 17)
    macs = count_macs(path)
    tokens, width = feature_grid(SIZE) ** 2 + 1, 32
    assert macs["by_op_type"]["MatMul"] == 2 * tokens * tokens * width  # q.k^T and attn.v
    linears = tokens * (width * 3 * width + width * width + 2 * width * 4 * width) + width * 3
    assert macs["by_op_type"]["Gemm"] == linears


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_pool_chooses_the_heads_input(pool):
    torch.manual_seed(0)
    model, _ = build_model(_cfg(vit_pool=pool, vit_depth=1), 3, image_size=64)
    enc = model.vit.eval()
    x = torch.randn(2, 2048, 2, 2)
    t = torch.cat([enc.cls_token.expand(2, -1, -1), enc.proj(x).flatten(2).transpose(1, 2)], 1)
    t = enc.blocks(t + enc.pos_embed)
    want = t[:, 1:].mean(1) if pool == "avg" else t[:, 0]
    torch.testing.assert_close(enc(x), enc.norm(want))


def test_hybrid_loads_backbone_weights_around_fresh_encoder(tmp_path, caplog):
    plain, _ = build_model(ModelConfig(arch="resnext50_32x4d", pretrained="none", dropout=0.0), 3)
    path = tmp_path / "rnx.pt"
    torch.save(plain.state_dict(), path)
    model, source = build_model(_cfg(pretrained=str(path)), 5, image_size=SIZE)
    assert source == str(path)
    torch.testing.assert_close(model.layer4[0].conv1.weight, plain.layer4[0].conv1.weight)
    assert isinstance(model.vit, ViTEncoder) and model.fc[1].out_features == 5


def test_recipe_vit_keys_need_hybrid_vit():
    with pytest.raises(ValueError, match="vit_depth is only used with hybrid: vit"):
        ModelConfig(arch="resnext50_32x4d", vit_depth=2)
    with pytest.raises(ValueError, match="does not split into vit_heads"):
        ModelConfig(arch="resnext50_32x4d", hybrid="vit", vit_width=100, vit_heads=3)
    with pytest.raises(ValueError, match="vit_pool is only used with hybrid: vit"):
        ModelConfig(arch="resnext50_32x4d", vit_pool="token")
    with pytest.raises(ValueError, match="attention: cbam are not built together"):
        ModelConfig(arch="resnext50_32x4d", hybrid="vit", attention="cbam")


def test_hybrid_refused_for_archs_without_it():
    why = refusal("mobilenet_v3_large", ("finetune",), 1.0, "none", hybrid="vit")
    assert why is not None and "resnet50" in why and "resnext50_32x4d" in why
    assert refusal("resnext50_32x4d", ("finetune", "qat"), 1.0, "none", hybrid="vit") is None


def test_ensemble_hybrid_recipe_parses():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    r = parse_recipe(yaml.safe_load((root / "recipes" / "resnext_vit_ensemble.yaml").read_text()))
    assert r.model.hybrid == "vit" and r.model.vit_width == 192 and r.model.vit_heads == 3
    with pytest.raises(RecipeError):
        parse_recipe({**yaml.safe_load((root / "recipes" / "resnext_vit_ensemble.yaml").read_text()),
                      "model": {"arch": "resnext50_32x4d", "hybrid": "vit", "vit_hedas": 3}})

"""`edgepipe explain`: CAM overlays of float and QAT checkpoints, the registry's layer, graphs refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from edgepipe.cli import app
from edgepipe.errors import BenchInputError, ModelError
from edgepipe.explain import Explainable, explain_batch, load_explainable, target_layer

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")

runner = CliRunner()
CLASSES = ["class_0", "class_1", "class_2"]
PRE = {"input_size": [3, 64, 64], "resize": 72, "crop": 64, "interpolation": "bilinear",
       "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip


def _float_ckpt():
    from edgepipe.models.build import build_model
    from edgepipe.recipe import ModelConfig

    torch.manual_seed(0)
    # bn_momentum 1: one train-mode pass sets BN statistics to real ones, so the untrained net's output
    # depends on its input (with init statistics it is nearly constant, and so would every CAM be)
    cfg = ModelConfig(arch="mobilenet_v3_large", pretrained="none", width_mult=0.25, bn_momentum=1.0)
    model, _ = build_model(cfg, 3)
    model.train()
    model(torch.randn(16, 3, 64, 64))
    return {"arch": cfg.arch, "model_cfg": cfg.model_dump(), "num_classes": 3, "classes": CLASSES,
            "preprocessing": PRE, "state_dict": model.state_dict()}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `edgepipe build` lays it out: finetune/model.pt, qat/model.pt, export/*.onnx."""
    from edgepipe.models.build import build_model
    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
    from edgepipe.recipe import ModelConfig

    run = tmp_path_factory.mktemp("run")
    ckpt = _float_ckpt()
    (run / "finetune").mkdir()
    torch.save(ckpt, run / "finetune" / "model.pt")
    model, _ = build_model(ModelConfig(**ckpt["model_cfg"]), 3, quantizable=True)
    model.load_state_dict(ckpt["state_dict"])
    prepare_qat(model)
    model.eval()  # observers see one batch (calibration); BN statistics stay the float model's
    model(torch.randn(16, 3, 64, 64))
    freeze_observers(model)
    freeze_bn_stats(model)
    (run / "qat").mkdir()
    q = {**ckpt, "state_dict": model.state_dict(), "quant": {"scheme": "eager-qat"}}
    torch.save(q, run / "qat" / "model.pt")
    (run / "export").mkdir()
    for name in ("fp32.onnx", "int8.onnx", "fp32.xml"):
        (run / "export" / name).write_bytes(b"graph")
    return run


def test_float_and_qat_checkpoints_write_an_overlay_per_image_and_a_grid(run_dir, imagefolder, tmp_path):
    imgs = sorted(imagefolder.rglob("*.png"))[:3]
    bad = tmp_path / "broken.png"
    bad.write_text("no")
    for stage, kind in (("finetune", "float"), ("qat", "QAT (fake-quant)")):
        out = tmp_path / stage
        res = runner.invoke(app, ["explain", str(run_dir / stage / "model.pt"), *map(str, imgs), str(bad),
                                  "--out", str(out), "--method", "gradcam++"])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert f"3 overlay(s), gradcam++ at features.16 ({kind} model)" in res.output
        assert "1 unreadable input(s) skipped" in res.output
        pngs = sorted(p.name for p in out.glob("*.png"))
        assert pngs == sorted([f"{p.stem}.gradcam++.png" for p in imgs] + ["grid.gradcam++.png"])
        for p in out.glob("*.png"):
            with Image.open(p) as im:
                assert im.format == "PNG" and min(im.size) > 100


def test_qat_model_is_the_fake_quant_model_and_its_maps_are_real(run_dir, imagefolder):
    m = load_explainable(run_dir / "qat" / "model.pt")
    assert m.quantized and any("FakeQuantize" in type(x).__name__ for x in m.module.modules())
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ex = explain_batch(m, x, "gradcam")
    assert ex.cams.shape == (2, 64, 64) and np.isfinite(ex.cams).all()
    assert ex.cams.max() > ex.cams.min() and 0.0 <= ex.cams.min() and ex.cams.max() <= 1.0 + 1e-6
    assert (ex.target == ex.pred).all() and ((ex.prob > 0) & (ex.prob <= 1)).all()


def test_gradcam_highlights_where_the_class_evidence_is():
    """A net that scores class 0 by how bright the image is: the map must peak on the bright square."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 1, 1], [-1, -1, -1]]).view(2, 3, 1, 1))
        conv.bias.zero_()
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0], [0, 1]]))
        fc.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    m = Explainable(Path("net.pt"), net, None, ["bright", "dark"], PRE, False)
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[0, :, 20:28, 4:12] = 2.0  # bottom-left square
    for method in ("gradcam", "layercam"):
        ex = explain_batch(m, x, method, targets=[0])
        assert ex.layer == "0"  # no registry arch: the last Conv2d
        cam = ex.cams[0]
        assert cam[20:28, 4:12].mean() > 0.9 and cam[:16, 16:].max() < 0.1


def test_target_layer_from_registry_override_and_unknown_name(run_dir):
    m = load_explainable(run_dir / "finetune" / "model.pt")
    assert target_layer(m.module, "mobilenet_v3_large")[0] == "features.16"
    assert target_layer(m.module, "mobilenet_v3_large", "features.14")[0] == "features.14"
    with pytest.raises(ModelError, match="no module named 'layer9'.*--target-layer"):
        target_layer(m.module, "mobilenet_v3_large", "layer9")


def test_graphs_are_refused_in_one_line_naming_the_checkpoint(run_dir, tmp_path):
    fp32, int8 = run_dir / "export" / "fp32.onnx", run_dir / "export" / "int8.onnx"
    res = runner.invoke(app, ["explain", str(fp32), "x.png", "--out", str(tmp_path)])
    assert res.exit_code == 7 and len(res.output.strip().splitlines()) == 1
    assert "has no gradients" in res.output
    assert str((run_dir / "finetune" / "model.pt").resolve()) in res.output
    with pytest.raises(BenchInputError, match=r"qat/model\.pt"):
        load_explainable(int8)
    with pytest.raises(BenchInputError, match="an OpenVINO IR"):
        load_explainable(run_dir / "export" / "fp32.xml")
    lone = tmp_path / "model.onnx"
    lone.write_bytes(b"x")
    with pytest.raises(BenchInputError, match=r"finetune/model\.pt for float, qat/model\.pt for QAT"):
        load_explainable(lone)


def test_unknown_method_is_one_line(run_dir, imagefolder, tmp_path):
    img = next(imagefolder.rglob("*.png"))
    res = runner.invoke(app, ["explain", str(run_dir / "finetune" / "model.pt"), str(img), "--out",
                              str(tmp_path), "--method", "magic"])  # fmt: skip
    assert res.exit_code == 7 and "unknown --method 'magic'" in res.output


def test_layer_for_input_keeps_the_arch_layer_unless_its_map_is_too_small(run_dir):
    from edgepipe.explain.cam import layer_for_input, map_sizes

    m = load_explainable(run_dir / "finetune" / "model.pt")
    big = np.zeros((1, 3, 160, 160), np.float32)
    assert layer_for_input(m, big) == ("features.16", (5, 5))
    small = np.zeros((1, 3, 32, 32), np.float32)  # features.16 is 1x1 here: a flat map
    name, size = layer_for_input(m, small)
    sizes = map_sizes(m.module, [f"features.{i}" for i in range(17)], small)
    assert sizes["features.16"] == (1, 1) and size == sizes[name] == (4, 4)
    deeper = [n for n in sizes if int(n.split(".")[1]) > int(name.split(".")[1])]
    assert deeper and all(min(sizes[n]) < 4 for n in deeper)  # the deepest block with a 4x4 map


def test_qat_maps_do_not_depend_on_the_output_fake_quant_clamping_the_winning_logit(run_dir):
    """Fake-quant passes no gradient where it clamps: with the logits' range squeezed, every top logit is
    clamped, and a CAM of the quantized logits would be all zeros. The maps are of the logits before that
    last fake-quant, so squeezing its range leaves them as they were; the probabilities stay the full QAT
    model's, and the fake-quant is switched back on."""
    from edgepipe.quant.qat import fake_quant_modules

    m = load_explainable(run_dir / "qat" / "model.pt")
    x = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    before = explain_batch(m, x, "gradcam")
    assert any(c.max() > c.min() for c in before.cams)
    out_fq = dict(fake_quant_modules(m.module))["classifier.3.activation_post_process"]  # the logits'
    out_fq.scale.fill_(1e-5)  # the logits' range shrinks to about +-0.001: every winning logit is clamped
    with torch.no_grad():
        probs = torch.softmax(m.module(torch.from_numpy(x)), 1).numpy()
    after = explain_batch(m, x, "gradcam", targets=before.target.tolist())
    np.testing.assert_allclose(after.cams, before.cams, atol=1e-5)
    np.testing.assert_allclose(after.prob, probs.max(1), rtol=1e-6)
    assert bool(out_fq.fake_quant_enabled[0])

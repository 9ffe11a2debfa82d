import pytest
import torch

from edgepipe.errors import ModelError
from edgepipe.models import build as build_mod
from edgepipe.models.build import build_model, rebuild
from edgepipe.models.registry import ModelSpec, get_spec, register
from edgepipe.recipe import ModelConfig


def test_registering_a_name_twice_is_an_error():
    spec = get_spec("mobilenet_v3_large")
    with pytest.raises(ModelError, match="registered twice"):
        register(ModelSpec(spec.name, spec.build, None, None, spec.head))


def test_unknown_arch_names_the_choices():
    with pytest.raises(ModelError, match="mobilenet_v3_large"):
        get_spec("mobilenet_v9")


def test_new_head_has_dataset_classes_and_bn_momentum_override():
    model, source = build_model(ModelConfig(width_mult=0.25, bn_momentum=0.2), 7)
    assert source == "none"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.2}


def test_local_pretrained_weights_load_except_the_head(tmp_path):
    src, _ = build_model(ModelConfig(width_mult=0.25), 1000)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    model, source = build_model(ModelConfig(width_mult=0.25, pretrained=str(tmp_path / "w.pt")), 5)
    assert source.endswith("w.pt")
    torch.testing.assert_close(model.features[0][0].weight, src.features[0][0].weight)


def test_foreign_weights_are_rejected(tmp_path):
    torch.save({"x": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match="does not fit"):
        build_model(ModelConfig(width_mult=0.25, pretrained=str(tmp_path / "foreign.pt")), 5)


def test_offline_imagenet_error_names_the_file_to_place(monkeypatch, tmp_path):
    from torchvision.models._api import WeightsEnum

    def offline(self, *a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError) as exc:
        build_mod.imagenet_state_dict(get_spec("mobilenet_v3_large"))
    msg = str(exc.value)
    assert "mobilenet_v3_large-" in msg and str(tmp_path / "checkpoints") in msg and "\n" not in msg


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_quantizable_twin_loads_float_checkpoint(arch):
    model, _ = build_model(ModelConfig(arch=arch, width_mult=0.25), 3)
    ckpt = {
        "model_cfg": ModelConfig(arch=arch, width_mult=0.25).model_dump(),
        "num_classes": 3,
        "state_dict": model.state_dict(),
    }
    twin = rebuild(ckpt, quantizable=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(twin(x), model.eval()(x))


# --- ResNet-50, ResNeXt-50 (float + quantizable twin) and EfficientNet-B0 (float only) ---

NEW_ARCHS = ["resnet50", "resnext50_32x4d", "efficientnet_b0"]
RESNETS = ["resnet50", "resnext50_32x4d"]


def _trainable_prefixes(model) -> set[str]:
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_new_archs_build_with_a_head_of_dataset_classes(arch):
    model, source = build_model(ModelConfig(arch=arch), 7)
    assert source == "none"
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    parent, attr = get_spec(arch).head(model)
    assert parent[int(attr)].out_features == 7


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_new_archs_are_registered_once(arch):
    spec = get_spec(arch)
    with pytest.raises(ModelError, match="registered twice"):
        register(ModelSpec(arch, spec.build, None, None, spec.head))


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_new_archs_offline_imagenet_error_names_the_file(monkeypatch, tmp_path, arch):
    import torchvision.models as tvm
    from torchvision.models._api import WeightsEnum

    def offline(self, *a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    enum, member = get_spec(arch).weights.split(".")
    filename = getattr(getattr(tvm, enum), member).url.rsplit("/", 1)[-1]
    with pytest.raises(ModelError) as exc:
        build_model(ModelConfig(arch=arch, pretrained="imagenet"), 3)
    msg = str(exc.value)
    assert filename in msg and str(tmp_path / "checkpoints") in msg and "fix:" in msg and "\n" not in msg


def test_resnet_blocks_are_the_stem_then_layer1_to_layer4():
    from edgepipe.train.freeze import freezer_for

    model, _ = build_model(ModelConfig(arch="resnet50"), 3)
    blocks = get_spec("resnet50").blocks(model)
    assert len(blocks) == 5 and list(blocks[0]) == [model.conv1, model.bn1, model.relu, model.maxpool]
    assert blocks[1:] == [model.layer1, model.layer2, model.layer3, model.layer4]
    # the published ResNeXt gradual unfreezing: fc, then layer4, then layer3, then layers 2 and 1
    expect = {0: {"fc"}, 1: {"fc", "layer4"}, 2: {"fc", "layer4", "layer3"},
              4: {"fc", "layer4", "layer3", "layer2", "layer1"}}
    for n, trainable in expect.items():
        for p in model.parameters():
            p.requires_grad_(True)
        freezer_for(model, "resnet50", n)
        assert _trainable_prefixes(model) == trainable, n
    assert not model.conv1.weight.requires_grad and not model.bn1.training  # the stem: frozen, in eval
    with pytest.raises(ModelError, match="has 5"):
        freezer_for(model, "resnet50", 6)


def test_efficientnet_b0_blocks_are_its_features():
    model, _ = build_model(ModelConfig(arch="efficientnet_b0"), 3)
    assert get_spec("efficientnet_b0").blocks(model) == list(model.features) and len(model.features) == 9


@pytest.mark.parametrize("arch", RESNETS)
def test_resnet_dropout_sits_before_the_head_in_float_and_twin(arch):
    for quantizable in (False, True):
        model, _ = build_model(ModelConfig(arch=arch, dropout=0.3), 3, quantizable=quantizable)
        assert isinstance(model.fc[0], torch.nn.Dropout) and model.fc[0].p == 0.3


@pytest.mark.parametrize("arch", ["resnext50_32x4d"])  # resnet50: test_models_every_arch_e2e
def test_resnet_twin_takes_the_float_weights_then_fuses_and_prepares(arch):
    from edgepipe.quant.qat import is_qat_conv, prepare_qat

    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(arch=arch), 3)
    cfg = ModelConfig(arch=arch).model_dump()
    ckpt = {"model_cfg": cfg, "num_classes": 3, "state_dict": model.state_dict()}
    twin = rebuild(ckpt, quantizable=True)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(twin.eval()(x), model.eval()(x))
    prepare_qat(twin)
    blocks = get_spec(arch).blocks(twin)
    assert len(blocks) == 5 and is_qat_conv(blocks[0][0])  # conv1+bn1+relu fused, bn1/relu now Identity
    assert sum(is_qat_conv(m) for m in twin.modules()) == 53
    assert twin.train()(x).shape == (2, 3)


def test_efficientnet_b0_has_no_quantizable_twin():
    with pytest.raises(ModelError, match="no quantizable twin"):
        build_model(ModelConfig(arch="efficientnet_b0"), 3, quantizable=True)


def test_mobilenet_v3_small_twin_is_quantizable_small_and_prepares_for_qat():
    from torchvision.models.quantization.mobilenetv3 import QuantizableMobileNetV3

    from edgepipe.quant.qat import fake_quant_modules, prepare_qat

    twin, _ = build_model(ModelConfig(arch="mobilenet_v3_small", width_mult=0.25), 3, quantizable=True)
    assert isinstance(twin, QuantizableMobileNetV3) and len(twin.features) == 13  # small, not large (17)
    prepared = prepare_qat(twin.train())
    assert fake_quant_modules(prepared) and prepared(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(
    "stages, model, words",
    [
        (["finetune", "export"], {"arch": "efficientnet_b0"}, ["efficientnet_b0", "export", "[finetune]"]),
        (["finetune"], {"arch": "resnet50", "width_mult": 0.5}, ["resnet50", "width_mult", "mobilenet_v3"]),
        (["finetune"], {"pretrained": "imagenet", "width_mult": 0.5}, ["imagenet", "width_mult: 1.0"]),
    ],
)
def test_plan_refuses_what_the_registry_cannot_serve_in_one_line(stages, model, words):
    from edgepipe.errors import RecipeError
    from edgepipe.pipeline import plan
    from edgepipe.recipe import parse_recipe

    with pytest.raises(RecipeError) as exc:  # before any stage runs
        plan(parse_recipe({"name": "r", "data": {"root": "photos"}, "model": model, "stages": stages}))
    msg = str(exc.value)
    assert all(w in msg for w in words) and "fix:" in msg and "\n" not in msg

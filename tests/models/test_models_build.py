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


def test_quantizable_twin_loads_float_checkpoint():
    model, _ = build_model(ModelConfig(width_mult=0.25), 3)
    ckpt = {
        "model_cfg": ModelConfig(width_mult=0.25).model_dump(),
        "num_classes": 3,
        "state_dict": model.state_dict(),
    }
    twin = rebuild(ckpt, quantizable=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(twin(x), model.eval()(x))

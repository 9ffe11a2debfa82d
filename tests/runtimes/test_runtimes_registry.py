"""One table of runtimes and model kinds: loading, bench and the bench stage read it instead of names."""

from __future__ import annotations

import dataclasses

import pytest

from edgepipe.bench.loading import BenchModel, select_runtimes
from edgepipe.errors import BenchInputError
from edgepipe.runtimes import RUNTIME_NAMES, registry
from edgepipe.runtimes.registry import (
    ROLES,
    ModelKind,
    RuntimeSpec,
    kind_of_suffix,
    model_kind,
    model_kinds,
    register_kind,
    register_runtime,
    runtime_for,
    runtime_names,
    runtime_spec,
    runtime_specs,
)


def test_every_runtime_names_a_backend_class_of_its_own_name():
    assert RUNTIME_NAMES == tuple(s.name for s in runtime_specs())
    for spec in runtime_specs():
        assert spec.load().name == spec.name
        assert spec.suffixes and all(s.startswith(".") for s in spec.suffixes)


def test_registries_refuse_a_second_entry_of_a_name():
    with pytest.raises(ValueError, match="runtime 'onnxruntime' is registered twice"):
        register_runtime(RuntimeSpec("onnxruntime", "x:Y", "x", (".onnx",), None, ()))
    with pytest.raises(ValueError, match="model kind 'onnx' is registered twice"):
        register_kind(ModelKind("onnx", (".onnx",), ("onnxruntime",), "onnxruntime"))
    with pytest.raises(ValueError, match="names runtimes"):
        register_kind(ModelKind("engine", (".engine",), ("tensorrt",), "tensorrt"))


def test_unknown_runtime_is_refused_naming_the_known_ones():
    with pytest.raises(BenchInputError, match=r"unknown runtime 'tensorrt'; fix: use one of onnxruntime"):
        runtime_spec("tensorrt")


def test_suffixes_mark_kinds_and_each_kind_runs_on_its_natural_runtime(tmp_path):
    assert kind_of_suffix(".ONNX").name == "onnx" and kind_of_suffix(".xml").name == "openvino-ir"
    assert kind_of_suffix(".pth").name == "checkpoint" and kind_of_suffix(".tflite") is None
    for kind in model_kinds():
        model = BenchModel(
            "m", tmp_path / f"m{kind.suffixes[0]}", kind.name, (1, 3, 8, 8), {}, None, None, ""
        )
        assert select_runtimes(model, None, None) == [kind.natural]
        assert sorted(select_runtimes(model, None, list(RUNTIME_NAMES))) == sorted(kind.runtimes)
    # only runtimes with a precision option carry a precision (and a performance hint) in their rows
    assert [s.name for s in runtime_specs() if s.takes_precision] == ["openvino"]


def test_each_role_is_one_runtime_and_a_second_holder_or_an_unknown_role_is_refused():
    for role in ROLES:
        assert runtime_for(role).name in RUNTIME_NAMES
    assert runtime_for("onnx").name == model_kind("onnx").natural  # what runs every .onnx runs a plain one
    with pytest.raises(ValueError, match="runtime 'tvm' takes role 'onnx': 'onnxruntime' has it"):
        register_runtime(RuntimeSpec("tvm", "x:Y", "tvm", (".onnx",), "onnx", (), roles=("onnx",)))
    with pytest.raises(ValueError, match="runtime 'tvm' takes role 'gpu': roles are onnx, ir"):
        register_runtime(RuntimeSpec("tvm", "x:Y", "tvm", (".onnx",), "onnx", (), roles=("gpu",)))
    assert "tvm" not in runtime_names()


@pytest.fixture
def fake_onnx_runtime(monkeypatch):
    """A registry in which a made-up runtime, registered like any other, runs every .onnx in its own QDQ
    placement on kernels of its own: nothing below names it, so whatever follows it read the registry."""
    rest = {n: dataclasses.replace(s, roles=tuple(r for r in s.roles if r != "onnx"))
            for n, s in registry._SPECS.items()}  # fmt: skip
    monkeypatch.setattr(registry, "_SPECS", rest)
    return register_runtime(
        RuntimeSpec("fakert", "x:Y", "fakert", (".onnx",), "onnx", ("threads",), title="FakeRT",
                    roles=("onnx",), qdq="fused", target_kernel="FakeRT's own int8 kernels")  # fmt: skip
    )


def test_what_runs_where_follows_the_registry_not_a_spelled_name(fake_onnx_runtime):
    from edgepipe.experiments.ensemble import _runtime as ensemble_runtime
    from edgepipe.experiments.sweep import _primary
    from edgepipe.pipeline import plan
    from edgepipe.recipe import parse_recipe
    from edgepipe.targets import TARGETS
    from edgepipe.targets.check import kernel_name

    assert runtime_for("onnx") is fake_onnx_runtime and runtime_for("ir").name == "openvino"
    assert ensemble_runtime() == "fakert"
    assert _primary([{"runtime_label": "openvino-f32"}, {"runtime_label": "fakert"}]) == "fakert"
    target = TARGETS["x86-64-v3"]
    assert kernel_name("fakert", target) == "FakeRT's own int8 kernels"
    assert kernel_name("onnxruntime", target) == target.kernel  # no kernels of its own: the target's
    # the recipe keys that name runtimes accept what the registry offers for them
    recipe = {"name": "r", "data": {"root": "photos"}, "stages": ["finetune", "qat", "export", "bench"],
              "bench": {"runtimes": ["fakert"]}, "export": {"openvino_qdq": "fakert"}}  # fmt: skip
    assert plan(parse_recipe(recipe))[-1] == "bench"

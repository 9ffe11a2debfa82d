"""One table of runtimes and model kinds: loading, bench and the bench stage read it instead of names."""

from __future__ import annotations

import pytest

from edgepipe.bench.loading import BenchModel, select_runtimes
from edgepipe.errors import BenchInputError
from edgepipe.runtimes import RUNTIME_NAMES
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


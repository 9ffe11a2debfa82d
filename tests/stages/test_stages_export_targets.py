"""The export gate per target: a checked target under export.min_agreement stops the build with one line that
names the target, its kernels and the fix; a target not checked never passes nor fails."""

from __future__ import annotations

import pytest

from edgepipe.errors import ParityError
from edgepipe.recipe import parse_recipe
from edgepipe.stages.export import _target_gate
from tests.conftest import tiny_recipe


def _target(name: str, agreement: float | None, how: str = "emulated") -> dict:
    kernel = "AVX2 vpmaddubsw (int16 pairs)" if name == "x86-64-v3" else "NEON udot"
    return {"target": name, "how": how, "kernel": kernel, "images": 2000, "agreement": agreement,
            "runtime": "onnxruntime"}


def _recipe(tmp_path, numerics: str):
    return parse_recipe(tiny_recipe(tmp_path, qat={"numerics": numerics}, export={"min_agreement": 0.99}))


def test_an_8_bit_model_below_the_gate_on_avx2_names_the_target_and_the_7_bit_fix(tmp_path):
    metrics = {"int8": {"targets": [_target("host", 1.0, "native"), _target("x86-64-v3", 0.982)]}}
    with pytest.raises(ParityError) as err:
        _target_gate(metrics, _recipe(tmp_path, "s8"))
    msg = str(err.value)
    assert "\\n" not in msg and "target x86-64-v3" in msg and "98.20%" in msg
    assert "qat.numerics: s7" in msg and "drop x86-64-v3 from targets" in msg


def test_targets_at_or_above_the_gate_and_unchecked_targets_pass_silently(tmp_path):
    metrics = {"int8": {"targets": [
        _target("host", 0.99, "native"),  # a fraction, like export.min_agreement
        _target("x86-64-v4", None, "not checked"),
        _target("cortex-a76", 1.0),
    ]}}  # fmt: skip
    _target_gate(metrics, _recipe(tmp_path, "s7"))


def test_numerics_is_a_qat_key_with_the_portable_default(tmp_path):
    assert parse_recipe(tiny_recipe(tmp_path)).qat.numerics == "s7"
    with pytest.raises(Exception, match="numerics"):
        parse_recipe(tiny_recipe(tmp_path, qat={"numerics": "s4"}))

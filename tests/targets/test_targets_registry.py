"""Which target a CPU is, how each target is reached from a given host, and what the recipe accepts."""

from __future__ import annotations

import pytest

from edgepipe.constants import TARGET_NAMES
from edgepipe.errors import RecipeError
from edgepipe.targets import TARGETS, host_target, placement, resolve
from edgepipe.targets.registry import host_spec
from tests.conftest import tiny_recipe

ZEN3 = {"avx", "avx2", "fma", "sse4_2"}
ZEN5 = ZEN3 | {"avx512f", "avx512_vnni", "avx512_bf16"}


def test_registry_names_every_target_the_recipe_accepts():
    assert set(TARGETS) | {"host"} == set(TARGET_NAMES)


@pytest.mark.parametrize(
    ("flags", "machine", "want"),
    [
        (ZEN3, "x86_64", "x86-64-v3"),
        (ZEN5, "x86_64", "x86-64-v4"),
        (ZEN3 | {"avx_vnni"}, "x86_64", None),  # AVX-VNNI: not saturating, but not an AVX-512 CPU either
        ({"fp", "asimd", "asimddp"}, "aarch64", None),
    ],
)
def test_host_target_is_told_by_its_int8_kernels(flags, machine, want):
    assert host_target(flags, machine) == want


def test_an_avx2_host_saturates_8_bit_weights_and_a_vnni_host_does_not():
    assert host_spec(ZEN3).s8_saturates is True
    assert host_spec(ZEN5).s8_saturates is False


def test_a_target_qemu_cannot_emulate_is_not_checked_with_the_reason_and_fix():
    p = placement("x86-64-v4", flags=ZEN3)
    assert not p.checked and p.how == "not checked"
    assert "AVX-512" in p.reason and "fix:" in p.reason


def test_the_hosts_own_family_runs_natively():
    assert placement("x86-64-v4", flags=ZEN5).how == "native"
    assert placement("x86-64-v3", flags=ZEN3).how == "native"


def test_an_aarch64_target_without_its_sysroot_says_how_to_install_it(tmp_path):
    p = placement("cortex-a76", root=tmp_path / "nothing")
    assert p.how == "not checked" and "install-targets" in p.reason


def test_default_targets_are_the_host_first_and_never_the_hosts_family_twice():
    chosen = [p.target.name for p in resolve(None)]
    assert chosen[0] == "host"
    assert host_target() not in chosen[1:]
    assert all(p.checked for p in resolve(None))


def test_named_targets_keep_their_order_and_refuse_unknown_names():
    assert [p.target.name for p in resolve(["cortex-a72", "host", "cortex-a72"])] == ["cortex-a72", "host"]
    with pytest.raises(RecipeError, match="unknown target 'pi5'"):
        resolve(["pi5"])


def test_recipe_rejects_a_misspelt_target_with_a_suggestion(tmp_path):
    from edgepipe.recipe import parse_recipe

    raw = tiny_recipe(tmp_path, targets=["cortex-a67"])
    with pytest.raises(RecipeError, match="did you mean 'cortex-a76'"):
        parse_recipe(raw)
    with pytest.raises(RecipeError, match="empty list"):
        parse_recipe(tiny_recipe(tmp_path, targets=[]))
    assert parse_recipe(tiny_recipe(tmp_path, targets=["host", "x86-64-v3"])).targets == ("host", "x86-64-v3")

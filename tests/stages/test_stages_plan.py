"""The stage registry and the plan derived from it: one declaration per stage gives the order, the names a
recipe may list, the needs checked before any work, and each stage's cache-key slice."""

from __future__ import annotations

import dataclasses

import pytest

from edgepipe import stages
from edgepipe.errors import RecipeError, StageError
from edgepipe.pipeline import plan
from edgepipe.recipe import parse_recipe
from edgepipe.stages.base import StageSpec

BASE = {"name": "r", "data": {"root": "photos"}}


def _spec(name: str, needs=(), outputs=(), optional=()) -> StageSpec:
    return StageSpec(name, tuple(needs), tuple(outputs), config=dict, run=print, optional=tuple(optional))


def test_the_order_is_derived_from_what_each_stage_needs():
    assert stages.order() == ("split", "finetune", "qat", "explain", "export", "ptq", "bench")
    assert stages.listable() == ("finetune", "qat", "explain", "export", "ptq", "bench")  # split always runs


def test_order_follows_needs_and_optional_inputs_whatever_the_declaration_order():
    specs = [
        _spec("z_report", needs=["rows"], optional=["extra"]),
        _spec("m_measure", needs=["model"], outputs=["rows"]),
        _spec("a_train", outputs=["model"]),
        _spec("b_extra", needs=["model"], outputs=["extra"]),
    ]
    assert stages.order({s.name: s for s in specs}) == ("a_train", "b_extra", "m_measure", "z_report")


def test_a_need_nobody_makes_or_a_cycle_is_refused():
    with pytest.raises(StageError, match="needs weights, which no stage hands on"):
        stages.order({"a": _spec("a", needs=["weights"])})
    cycle = {"a": _spec("a", needs=["y"], outputs=["x"]), "b": _spec("b", needs=["x"], outputs=["y"])}
    with pytest.raises(StageError, match="stages a, b need each other's outputs"):
        stages.order(cycle)


def test_the_registry_refuses_a_second_stage_of_a_name_or_a_second_maker_of_an_output():
    qat = stages.get("qat")
    with pytest.raises(StageError, match="stage 'qat' is declared twice"):
        stages.register(qat)
    with pytest.raises(StageError, match="'qat' and 'qat2' both hand on qat_checkpoint"):
        stages.register(dataclasses.replace(qat, name="qat2"))
    assert "qat2" not in stages.order()
    with pytest.raises(StageError, match="unknown stage 'distill'"):
        stages.get("distill")


def test_plan_runs_split_then_the_listed_stages_in_pipeline_order():
    assert plan(parse_recipe(BASE)) == ["split", "finetune", "qat", "explain", "export", "ptq", "bench"]
    listed = parse_recipe({**BASE, "stages": ["qat", "finetune"]})
    assert plan(listed) == ["split", "finetune", "qat"]


def test_plan_refuses_a_recipe_that_drops_a_needed_stage():
    with pytest.raises(RecipeError, match="'export' needs qat_checkpoint from a stage not listed; fix:"):
        plan(parse_recipe({**BASE, "stages": ["finetune", "export"]}))


def test_plan_refuses_an_unknown_stage_naming_the_known_ones():
    known = r"'finetune', 'qat', 'explain', 'export', 'ptq', 'bench'; fix: did you mean 'qat'"
    with pytest.raises(RecipeError, match=rf"stages\.1: 'qatt' is not one of {known}"):
        plan(parse_recipe({**BASE, "stages": ["finetune", "qatt"]}))
    with pytest.raises(RecipeError, match=r"stages\.0: 'split' is not one of"):  # it always runs
        plan(parse_recipe({**BASE, "stages": ["split", "finetune"]}))


def test_plan_refuses_a_runtime_the_registry_does_not_offer_for_its_key():
    listed = {**BASE, "stages": ["finetune", "qat", "export", "ptq", "bench"]}
    known = "onnxruntime, openvino"
    with pytest.raises(RecipeError, match=rf"bench\.runtimes\.1: 'openvno' is not one of {known}; fix: did "
                                          "you mean 'openvino'"):  # fmt: skip
        plan(parse_recipe({**listed, "bench": {"runtimes": ["onnxruntime", "openvno"]}}))
    with pytest.raises(RecipeError, match=rf"bench\.runtimes\.0: 'torch' is not one of {known}; fix: use"):
        plan(parse_recipe({**listed, "bench": {"runtimes": ["torch"]}}))  # torch runs no file export makes
    with pytest.raises(RecipeError, match=rf"export\.openvino_qdq: 'tvm' is not one of {known}; fix: use"):
        plan(parse_recipe({**listed, "export": {"openvino_qdq": "tvm"}}))
    assert plan(parse_recipe({**listed, "bench": {"runtimes": ["openvino"]}}))[-1] == "bench"


def test_qat_refuses_an_arch_without_a_quantizable_twin_before_any_stage_runs():
    recipe = {**BASE, "model": {"arch": "efficientnet_b0"}}
    with pytest.raises(RecipeError) as exc:
        plan(parse_recipe(recipe))  # every stage, so qat too
    msg = str(exc.value)
    assert "efficientnet_b0" in msg and "fix:" in msg and "resnet50" in msg and "\n" not in msg
    assert plan(parse_recipe({**recipe, "stages": ["finetune"]})) == ["split", "finetune"]


@pytest.mark.parametrize(
    ("key", "value", "changes"),
    [
        ("num_workers", 2, {"finetune", "qat"}),  # workers draw their own augmentation streams
        ("augment", {"hflip": False}, {"finetune", "qat"}),
        ("image_size", 64, {"finetune"}),  # qat, export, ptq, bench read it from the checkpoint
    ],
)
def test_a_data_key_changes_the_cache_key_of_exactly_the_stages_it_affects(key, value, changes):
    before, after = parse_recipe(BASE), parse_recipe({"name": "r", "data": {"root": "photos", key: value}})
    changed = {n for n in stages.listable() if stages.get(n).config(before) != stages.get(n).config(after)}
    assert changed == changes


def test_every_data_key_is_in_the_cache_key_of_split_or_finetune_and_a_new_one_would_be_too(monkeypatch):
    """Training stages hash their data section minus the keys they see through their inputs, so a key added to
    DataConfig reaches the cache keys by default instead of being silently left out of them."""
    from edgepipe.recipe import DataConfig
    from edgepipe.stages import split as split_stage
    from edgepipe.stages.base import PREPROCESSING_DATA_KEYS, SPLIT_DATA_KEYS

    class Source:  # the folder's fingerprint is not what this test is about
        def fingerprint(self) -> dict:
            return {}

    monkeypatch.setattr(split_stage, "open_source", lambda *_: Source())

    recipe = parse_recipe(BASE)
    fields = set(DataConfig.model_fields)
    split = set(stages.get("split").config(recipe)) & fields
    finetune = set(stages.get("finetune").config(recipe)["data"])
    qat = set(stages.get("qat").config(recipe)["data"])
    assert split == SPLIT_DATA_KEYS and split | finetune == fields and not split & finetune
    assert qat == fields - SPLIT_DATA_KEYS - PREPROCESSING_DATA_KEYS


def test_bench_threads_are_in_the_bench_key_and_in_exports_only_when_export_times_layers():
    before = parse_recipe(BASE)
    after = parse_recipe({**BASE, "bench": {"threads": 1}})
    changed = {n for n in ("export", "bench") if stages.get(n).config(before) != stages.get(n).config(after)}
    assert changed == {"bench"}  # export transforms and checks; bench measures (and profiles)
    auto = {**BASE, "export": {"float_layers": "auto"}}
    assert stages.get("export").config(parse_recipe(auto)) != stages.get("export").config(
        parse_recipe({**auto, "bench": {"threads": 1}})
    )

"""edgepipe sweep: --set parsing, variant validation and naming, stage reuse across variants, resume, Ray."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from edgepipe import pipeline
from edgepipe.cli import app
from edgepipe.errors import RecipeError
from edgepipe.experiments import sweep
from edgepipe.experiments.sweep import Axis, expand, parse_set
from tests.conftest import make_imagefolder, tiny_recipe

PIPELINE = {"build": pipeline.build, "plan": pipeline.plan}

BASE = {"name": "base", "data": {"dataset": "fashion-mnist", "image_size": 32}, "finetune": {"lr": 0.001}}


def test_parse_set_reads_each_value_as_yaml_and_keeps_bracketed_lists_whole():
    assert parse_set("finetune.lr=0.001,3e-3") == Axis("finetune.lr", (0.001, 0.003))
    assert parse_set("model.arch=mobilenet_v3_large, resnet18") == Axis(
        "model.arch", ("mobilenet_v3_large", "resnet18")
    )
    lists = parse_set("data.augment.rrc_scale=[0.5,1.0],[0.8,1.0],null")
    assert lists.values == ([0.5, 1.0], [0.8, 1.0], None)


@pytest.mark.parametrize(
    "text, words",
    [
        ("finetune.lr", "is not KEY=V1,V2"),
        ("finetune..lr=1", "not a dotted key path"),
        ("finetune.lr=0.1,,0.2", "empty value"),
        ("finetune.lr=0.1,0.1", "repeats the value 0.1"),
        ("name=a,b", "names each variant itself"),
    ],
)
def test_parse_set_refuses_malformed_settings_in_one_line(text, words):
    with pytest.raises(RecipeError, match=words) as info:
        parse_set(text)
    assert "\n" not in str(info.value) and "fix:" in str(info.value)


def test_expand_builds_the_grid_with_validated_recipes_named_from_their_settings():
    axes = [parse_set("finetune.lr=0.001,0.003"), parse_set("model.width_mult=0.5,1.0")]
    variants = expand(BASE, axes, "base")
    assert [v.name for v in variants] == [
        "base__finetune.lr-0.001__model.width_mult-0.5",
        "base__finetune.lr-0.001__model.width_mult-1.0",
        "base__finetune.lr-0.003__model.width_mult-0.5",
        "base__finetune.lr-0.003__model.width_mult-1.0",
    ]
    last = variants[-1].recipe
    assert last.name == variants[-1].name and last.finetune.lr == 0.003 and last.model.width_mult == 1.0
    assert BASE["finetune"] == {"lr": 0.001}, "the base recipe must not be modified"


def test_expand_names_a_typo_in_a_key_before_any_run():
    with pytest.raises(RecipeError, match=r"finetune\.lrr: unknown key; did you mean 'lr'") as info:
        expand(BASE, [parse_set("finetune.lrr=0.1,0.2")], "base")
    assert "--set finetune.lrr=0.1" in str(info.value)
    with pytest.raises(RecipeError, match=r"model\.width_mult: must be <= 2"):
        expand(BASE, [parse_set("model.width_mult=0.5,3")], "base")


def test_expand_refuses_a_key_below_a_plain_value_and_a_key_given_twice():
    with pytest.raises(RecipeError, match=r"finetune\.lr is a value \(0\.001\), not a section"):
        expand(BASE, [parse_set("finetune.lr.x=1,2")], "base")
    with pytest.raises(RecipeError, match="given twice"):
        expand(BASE, [parse_set("finetune.lr=0.1,0.2"), parse_set("finetune.lr=0.3")], "base")


def test_expand_keeps_folder_names_unique_when_values_differ_only_in_unsafe_characters():
    variants = expand(BASE, [parse_set("model.pretrained='a/b','a b'")], "base")
    names = [v.name for v in variants]
    assert len(set(names)) == 2 and all(n.startswith("base__model.pretrained-a_b-") for n in names)
    assert [v.recipe.name for v in variants] == names


def test_sweep_command_fails_in_one_line_naming_a_misspelt_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(BASE))
    res = CliRunner().invoke(app, ["sweep", str(recipe), "--set", "qat.epoch=1,2", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: --set qat.epoch=1: qat.epoch: unknown key; did you mean 'epochs'?"
    ]
    assert not (tmp_path / "sweep.md").exists()


# --- end to end on tiny data -----------------------------------------------------------------------------


def _tiny_recipe_file(tmp_path):
    data = make_imagefolder(tmp_path / "photos", classes=3, per_class=16, size=36)
    raw = tiny_recipe(
        data,
        name="tiny",
        stages=["finetune", "qat", "export", "bench"],
        finetune={"epochs": 1},
        export={"min_agreement": 0.5, "openvino": False},
        bench={"runtimes": ["onnxruntime"]},
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_sweep_reuses_unchanged_stages_writes_the_table_and_resumes_after_a_kill(tmp_path):
    recipe, out = _tiny_recipe_file(tmp_path), tmp_path / "sweep"
    axes = [parse_set("qat.lr=0.0001,0.0002")]
    names = ["tiny__qat.lr-0.0001", "tiny__qat.lr-0.0002"]

    def killed_at_second_variant(recipe, out, **kw):
        if recipe.name == names[1]:
            raise KeyboardInterrupt
        return pipeline.build(recipe, out, **kw)

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(recipe, axes, out, build=killed_at_second_variant, plan=pipeline.plan)
    assert (out / names[0] / "report.json").exists() and not (out / names[1]).exists()

    doc = sweep.run_sweep(recipe, axes, out, **PIPELINE)
    first, second = doc["variants"]
    assert [v["name"] for v in doc["variants"]] == names
    assert first["status"] == second["status"] == "done"
    # the killed sweep's finished variant is all cache hits; the next reuses split and finetune (same key)
    everything = ["split", "finetune", "qat", "export", "bench"]
    assert first["stages"] == {"ran": [], "reused": [], "cached": everything}
    assert second["stages"]["reused"] == ["split", "finetune"]
    assert second["stages"]["ran"] == ["qat", "export", "bench"]
    finetuned = [json.loads((out / n / "finetune" / "manifest.json").read_text())["key"] for n in names]
    assert finetuned[0] == finetuned[1]

    for v in doc["variants"]:
        fp32, int8 = v["models"]["fp32"], v["models"]["int8-qat"]
        report = json.loads((out / v["name"] / "report.json").read_text())
        row = next(
            r for r in report["rows"] if r["model"] == "int8-qat" and r["runtime_label"] == "onnxruntime"
        )
        assert int8["top1"] == row["top1"] and int8["gmacs"] == row["gmacs"]
        assert int8["size_mb"] == row["size_mb"]
        assert int8["top1_per_ms"] == row["top1_per_ms"] and int8["p50_ms"] == row["latency"]["p50_ms"]
        for m in (fp32, int8):
            assert 0 <= m["macro_f1"] <= 100 and 0 <= m["macro_precision"] <= 100 and m["params"] > 0
    assert any(v["int8_pareto"] for v in doc["variants"])
    md = (out / "sweep.md").read_text()
    assert md.startswith("# edgepipe sweep: tiny (2 variants: qat.lr)")
    assert "| 0.0001 |" in md and "| 0.0002 |" in md and "INT8 macro F1 %" in md
    assert json.loads((out / "sweep.json").read_text())["schema"] == "edgepipe.sweep/1"
    assert (out / sweep.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = sweep.run_sweep(recipe, axes, out, **PIPELINE)  # nothing left to do
    assert all(v["stages"]["ran"] == [] for v in again["variants"])


@pytest.mark.slow
def test_sweep_records_a_failed_variant_and_still_builds_the_others(tmp_path):
    recipe, out = _tiny_recipe_file(tmp_path), tmp_path / "sweep"
    doc = sweep.run_sweep(recipe, [parse_set("bench.fail_if=[],[size_mb>0]")], out, **PIPELINE)
    ok, failed = doc["variants"]
    assert ok["status"] == "done" and failed["status"] == "failed"
    assert "size_mb>0" in failed["error"] and "models" not in failed
    md = (out / "sweep.md").read_text()
    assert "| failed |" in md and "size_mb>0" in md
    res = CliRunner().invoke(
        app, ["sweep", str(recipe), "--set", "bench.fail_if=[],[size_mb>0]", "--out", str(out)]
    )
    assert res.exit_code == 5 and "error: 1 of 2 variants failed" in res.output


@pytest.mark.slow
def test_sweep_runs_variants_as_ray_tasks_on_a_one_node_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    recipe, out = _tiny_recipe_file(tmp_path), tmp_path / "sweep"
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        doc = sweep.run_sweep(recipe, [parse_set("qat.lr=0.0001,0.0002")], out, engine="ray", **PIPELINE)
    finally:
        ray.shutdown()
    assert [v["status"] for v in doc["variants"]] == ["done", "done"]
    # the split was made once, before the tasks: both reuse or hold it
    assert all("split" not in v["stages"]["ran"] for v in doc["variants"])
    assert (out / "sweep.md").exists()


def test_ray_engine_without_ray_names_the_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(BASE))
    with pytest.raises(Exception, match=r"pip install 'edgepipe\[dist\]'"):
        sweep.run_sweep(
            recipe, [parse_set("finetune.lr=0.1,0.2")], tmp_path / "s", engine="ray", **PIPELINE
        )


def test_ablation_benchmark_writes_a_valid_recipe_and_a_grid_the_recipe_accepts(tmp_path):
    import argparse

    from tests.conftest import load_script

    mod = load_script("ablation")
    path = mod.write_recipe(argparse.Namespace(out=str(tmp_path), epochs=2, limit_per_class=10))
    raw = yaml.safe_load(path.read_text())
    variants = expand(raw, [parse_set(s) for s in mod.DEFAULT_GRID], "ablation")
    assert len(variants) == 4 and all(v.recipe.finetune.epochs == 2 for v in variants)
    assert variants[0].recipe.stages == ("finetune", "qat", "export", "bench")

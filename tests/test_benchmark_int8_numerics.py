"""benchmarks/int8_numerics.py: variants derived with the gate off, the default gate re-applied per target,
one row per numerics from a run's report, and the Markdown rendered from the JSON alone."""

from __future__ import annotations

import json

from tests.conftest import load_script


def _load():
    return load_script("int8_numerics")


def _target(name, agreement, top1=90.0, how="emulated", runtime="onnxruntime"):
    return {"target": name, "title": name, "how": how, "kernel": f"{name} kernel", "runtime": runtime,
            "images": 2000, "agreement": agreement, "top1": top1, "reason": "", "runtime_version": "1.32.0",
            "cpu": {}, "wall_s": 9.0}  # fmt: skip


def _report(numerics: str, v3: float, ov: float = 0.995) -> dict:
    """A run's report.json as the bench stage and write_run_report leave it (the keys the script reads)."""
    targets = [_target("host", 1.0, how="native"), _target("x86-64-v3", v3), _target("cortex-a72", 1.0),
               _target("cortex-a76", None, None, how="not checked"),
               _target("x86-64-v3", 0.98, runtime="openvino")]  # fmt: skip
    int8 = {"torch_test_top1": 90.5, "ort_test_top1": 90.4, "ort_agreement": 0.9995, "test_images": 10000,
            "openvino_agreement": ov, "openvino_test_top1": 90.1, "openvino_precision": "bf16",
            "numerics": numerics, "targets": targets, "targets_fp32_top1": 91.2}  # fmt: skip
    fp32 = {"ort_test_top1": 91.0, "ort_agreement": 1.0, "openvino_agreement": 1.0}
    base = {"model": "fp32", "runtime": "onnxruntime", "precision": None, "runtime_label": "onnxruntime",
            "batch_size": 1}  # fmt: skip
    rows = [
        {**base, "latency": {"p50_ms": 2.0}, "speedup": 1.0, "speedup_paired": 1.0, "size_mb": 16.0,
         "top1": 91.0, "baseline": base},
        {"model": "int8-qat", "runtime": "onnxruntime", "runtime_label": "onnxruntime",
         "latency": {"p50_ms": 1.0}, "speedup": 2.0, "speedup_paired": 1.9, "size_mb": 4.5, "top1": 90.4,
         "baseline": base},
    ]  # fmt: skip
    stages = {
        "finetune": {"metrics": {}, "wall_time_s": 600.0, "cached": True},
        "qat": {"metrics": {}, "wall_time_s": 100.0, "cached": True},
        "export": {"metrics": {"fp32": fp32, "int8": int8}, "wall_time_s": 120.0, "cached": False},
    }
    return {"rows": rows, "stages": stages}


def test_derive_renames_sets_numerics_opens_the_gate_and_runs_every_stage():
    mod = _load()
    base = {"name": "mnv3_qat", "stages": ["finetune", "qat"], "qat": {"epochs": 2},
            "export": {"opset": 17, "min_agreement": 0.99}}  # fmt: skip
    out = mod.derive(base, "u8u8")
    assert out["name"] == "mnv3_qat_u8u8" and "stages" not in out
    assert out["qat"] == {"epochs": 2, "numerics": "u8u8"}
    assert out["export"] == {"opset": 17, "min_agreement": 0.0}
    assert base["export"]["min_agreement"] == 0.99 and base["stages"]  # the base is left as it was


def test_gate_at_099_fails_on_the_saturating_target_and_on_openvino_but_skips_unchecked_ones():
    mod = _load()
    exp = _report("s8", v3=0.975, ov=0.985)["stages"]["export"]["metrics"]
    g = mod.gate(exp)
    assert not g["passed"]
    assert [(f["check"], f["agreement"]) for f in g["failures"]] == [
        ("openvino (host)", 0.985), ("x86-64-v3", 0.975), ("x86-64-v3 (openvino)", 0.98)]  # fmt: skip
    assert "int8 cortex-a76" not in g["checked"] and "int8 cortex-a72" in g["checked"]
    exp = _report("s7", v3=0.9995)["stages"]["export"]["metrics"]
    assert [f["check"] for f in mod.gate(exp)["failures"]] == ["x86-64-v3 (openvino)"]
    exp["int8"]["targets"].pop()
    assert mod.gate(exp)["passed"]


def test_collect_reads_accuracy_targets_openvino_and_the_int8_speedup():
    mod = _load()
    v = mod.collect(_report("s8", v3=0.975))
    assert v["numerics"] == "s8" and v["fp32_ort_top1"] == 91.0 and v["qat_torch_top1"] == 90.5
    assert v["int8_ort_top1"] == 90.4 and v["int8_ort_agreement"] == 0.9995  # agreement: a fraction
    assert v["targets"]["x86-64-v3"]["agreement"] == 0.975  # ONNX Runtime's, not OpenVINO's on that target
    assert v["targets"]["x86-64-v3 (openvino)"]["agreement"] == 0.98 and v["targets_fp32_top1"] == 91.2
    assert v["targets"]["openvino (host)"]["agreement"] == 0.995
    t = v["int8_onnxruntime"]
    assert (t["p50_ms"], t["speedup"], t["speedup_paired"], t["size_mb"]) == (1.0, 2.0, 1.9, 4.5)
    assert t["baseline"] == "onnxruntime"
    assert v["stage_cached"] == {"finetune": True, "qat": True, "export": False}


def test_markdown_renders_one_row_per_numerics_from_json_alone(tmp_path):
    mod = _load()
    variants = []
    for numerics, v3 in (("s8", 0.975), ("s7", 0.9995)):
        v = {"numerics": numerics, "run": f"mnv3_qat_{numerics}", **mod.collect(_report(numerics, v3))}
        v["build"] = {"command": "edgepipe build x.yaml --out o", "rc": 0, "wall_s": 90.0,
                      "log_stages": {"finetune": "cached", "qat": "cached", "export": "running"}}  # fmt: skip
        variants.append(v)
    variants.append({"numerics": "u8u8", "run": "mnv3_qat_u8u8", "error": "boom",
                     "build": {"rc": 1, "wall_s": 3.0, "log_stages": {}}})  # fmt: skip
    results = {
        "created_utc": "2026-12-07T00:00:00+00:00",
        "environment": {"cpu_model": "AMD EPYC", "cpu_name": "amd-epyc-zen4", "logical_cores": 2,
                        "isa_flags": ["avx2", "avx512_vnni"], "packages": {"onnxruntime": "1.32.0"}},
        "host_target": "x86-64-v4",
        "commands": ["python benchmarks/int8_numerics.py"],
        "models": [{"base": "recipes/mnv3_qat.yaml", "name": "mnv3_qat", "arch": "mobilenet_v3_large",
                    "variants": variants}],
        "valgrind": {"tool": "valgrind --tool=callgrind", "valgrind_version": "3.19.0", "warmup": 5,
                     "iters": 20, "models": [{"model": "mnv3_qat", "rows": [
                         {"label": "fp32", "per_inference": 10e6, "wall_s": 60.0},
                         {"label": "int8 s8", "per_inference": 5e6, "wall_s": 50.0},
                         {"label": "int8 u8u8", "error": "timed out"}]}],
                     "verification": {"summary": "same", "rows": [
                         {"model": "mnv3_qat s8", "images": 16, "vs_haswell_max_abs": 0.0,
                          "vs_haswell_flips": 0, "vs_host_max_abs": 0.5, "vs_host_flips": 1}]}},
    }  # fmt: skip
    results["notes"] = mod.auto_notes(results)
    assert "mnv3_qat_s8: the build log says finetune, qat cached; ran export." in results["notes"]
    json.loads(json.dumps(results))  # what --render reads back is plain JSON
    md = mod.markdown(results)
    rows = [ln for ln in md.splitlines() if ln.startswith("| **")]
    assert len(rows) == 2 and rows[0].startswith("| **s8**") and rows[1].startswith("| **s7**")
    assert "97.50 ✗ / 90.00" in rows[0] and "FAIL: x86-64-v3 97.50%" in rows[0]  # fractions shown as %
    assert "(99.95% agree)" in rows[0]
    assert rows[1].rstrip().endswith("| FAIL: x86-64-v3 (openvino) 98.00% |")
    head = next(ln for ln in md.splitlines() if ln.startswith("| numerics"))
    assert head.index("cortex-a76:") < head.index("x86-64-v3 (openvino):") < head.index("openvino (host):")
    assert "FP32 top-1 on the targets' sample: 91.20%." in md
    assert "| not checked |" in rows[0]  # cortex-a76 could not run: never a pass
    assert "2.00x / 1.90x vs fp32 onnxruntime" in rows[0]
    assert "**u8u8: the build failed** (exit 1): `boom`" in md
    assert "| int8 s8 | 5.00 | 0.50x | 50 |" in md and "failed: timed out" in md
    assert "| mnv3_qat s8 | 16 | 0.000000 | 0 | 0.500000 | 1 |" in md
    assert "| mnv3_qat_s8 | 1.5 | finetune cached, qat cached, export running |" in md
    assert "AMD EPYC (`amd-epyc-zen4`" in md


def test_stages_from_log_reads_cached_and_reused_stages():
    mod = _load()
    text = ("[12/07/26] INFO     stage split    cached (/r/split)\n"
            "INFO     stage finetune reused from /r2/finetune\nINFO     stage qat      running -> /r/qat\n"
            "INFO     stage qat      done in 3.0s\n")  # fmt: skip
    assert mod.stages_from_log(text) == {"split": "cached", "finetune": "reused from", "qat": "running"}


def test_seed_u8u8_copies_the_s8_float_stages_once(tmp_path):
    mod = _load()
    for stage in ("split", "finetune", "qat"):
        (tmp_path / "m_s8" / stage).mkdir(parents=True)
        (tmp_path / "m_s8" / stage / "manifest.json").write_text("{}")
    assert mod.seed_u8u8(tmp_path, "m") == ["split", "finetune"]
    assert not (tmp_path / "m_u8u8" / "qat").exists()
    assert mod.seed_u8u8(tmp_path, "m") == []

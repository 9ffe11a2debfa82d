"""`edgepipe bench`: any model file on any runtime, accuracy through each runtime, and one-line bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgepipe.bench.memory import PeakMemory
from edgepipe.cli import app
from edgepipe.quant.export import set_metadata
from tests.conftest import export_onnx, make_imagefolder, ort_quantize

runner = CliRunner()
FAST = ["--warmup", "1", "--min-iters", "3", "--min-seconds", "0", "--threads", "1", "--paired-rounds", "2"]
CLASSES = ["class_0", "class_1", "class_2"]
PRE = {"input_size": [3, 32, 32], "resize": 32, "crop": 32, "interpolation": "bilinear",
       "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
# conv 3->8 k3 p1 at 32x32, conv 8->16 k3 s2 p1 to 16x16, linear 16->3
TINY_MACS = 8 * 32 * 32 * 27 + 16 * 16 * 16 * 72 + 16 * 3


class TinyCNN(nn.Module):
    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 3, 1, 2) if self.channels_last else x)


def export(path: Path, meta: dict | None = None, channels_last: bool = False, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    shape = (1, 32, 32, 3) if channels_last else (1, 3, 32, 32)
    export_onnx(TinyCNN(channels_last), path, shape, dynamic)
    if meta is not None:
        proto = onnx.load(str(path))
        set_metadata(proto, meta)
        onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    meta = {"classes": CLASSES, "preprocessing": PRE}
    z = {"fp32": export(root / "fp32.onnx", meta), "photos": make_imagefolder(root / "photos", 3, 8, 32)}
    z["int8"] = ort_quantize(z["fp32"], root / "int8.onnx")
    z["foreign"] = export(root / "foreign.onnx")
    from edgepipe.runtimes.openvino import convert_to_ir

    z["ir"] = convert_to_ir(z["fp32"], root / "fp32.xml")  # beside fp32.onnx
    z["lone_ir"] = convert_to_ir(z["fp32"], root / "lone" / "fp32.xml")
    return z


def bench(*args: str):
    return runner.invoke(app, ["bench", *map(str, args)])


def test_onnx_models_on_two_runtimes_write_the_schema(zoo, tmp_path):
    out = tmp_path / "r.json"
    res = bench(zoo["fp32"], zoo["int8"], "-r", "onnxruntime", "-r", "openvino", "--data", zoo["photos"],
                "--reference", zoo["fp32"], "--json", out, *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "edgepipe.bench/3"
    # --reference is benched: speed-ups divide by its fastest row on the same runtime and batch
    assert doc["baseline"] == {"model": "fp32.onnx", "match": ["runtime", "batch_size"], "pick": "fastest"}
    assert {"cpu_model", "isa_flags", "packages", "id"} <= set(doc["environment"])
    rows = {(r["model"], r["runtime"]): r for r in doc["rows"]}
    assert set(rows) == {(m, r) for m in ("fp32.onnx", "int8.onnx") for r in ("onnxruntime", "openvino")}
    ort, ov = rows["fp32.onnx", "onnxruntime"], rows["fp32.onnx", "openvino"]
    assert ort["top1"] == ov["top1"] and ort["agreement"] == ov["agreement"] == 1.0  # a fraction (0..1)
    assert ort["images"] == 24 and 0 <= ort["macro_f1"] <= 100 and ort["top5"] == 100.0  # 3 classes
    assert ort["gmacs"] * 1e9 == pytest.approx(TINY_MACS)
    assert rows["int8.onnx", "onnxruntime"]["int8_mac_share"] == 1.0 and ort["int8_mac_share"] == 0.0
    assert rows["int8.onnx", "openvino"]["gmacs"] == ov["gmacs"]
    for r in doc["rows"]:
        assert r["environment_id"] == doc["environment"]["id"]
        assert {"cold_ms", "p50_ms", "p99_ms", "std_ms", "throughput_ips"} <= set(r["latency"])
        assert "samples_ms" not in r["latency"]
        assert r["memory"]["peak_rss_mb"] >= r["memory"]["rss_before_mb"] > 0
    assert (  # --precision auto: the float model pinned to f32
        ov["precision"] == "auto" and ov["runtime_options"]["options"]["effective"]["precision"] == "f32"
    )
    int8_ov = rows["int8.onnx", "openvino"]
    assert int8_ov["speedup"] > 0 and ort["is_baseline"] and ort["speedup"] == 1.0
    assert int8_ov["baseline"] == {"model": "fp32.onnx", "runtime": "openvino", "precision": "auto",
                                   "runtime_label": "openvino-auto", "batch_size": 1}  # fmt: skip
    assert int8_ov["runtime_options"]["options"]["precision"] == "default"  # INT8: the plugin's choice
    assert int8_ov["speedup"] == ov["latency"]["p50_ms"] / int8_ov["latency"]["p50_ms"]
    assert "| fp32.onnx | onnxruntime | 1 |" in res.output and "agree % vs ref" in res.output
    assert "| speed-up vs fp32.onnx |" in res.output
    # every row timed again in alternating rounds: the paired speed-up and its spread beside it
    assert len(int8_ov["latency"]["round_medians_ms"]) == 2 and int8_ov["speedup_paired"] > 0
    lo, hi = int8_ov["speedup_paired_iqr"]
    assert lo <= int8_ov["speedup_paired"] <= hi and "(paired " in res.output and ", IQR " in res.output


def test_the_baseline_is_the_fastest_float_model_whatever_the_argument_order(zoo, tmp_path):
    """int8 first: FP32 is still the row speed-ups and top-1 drops divide by, not the first argument."""
    out = tmp_path / "r.json"
    res = bench(zoo["int8"], zoo["fp32"], "--data", zoo["photos"], "--json", out, *FAST)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["baseline"] == {"model": "fp32.onnx", "match": ["runtime", "batch_size"], "pick": "fastest"}
    int8, fp32 = doc["rows"]
    assert fp32["is_baseline"] and fp32["speedup"] == 1.0 and not int8["is_baseline"]
    assert int8["baseline"]["model"] == "fp32.onnx"
    assert int8["acc_drop"] == fp32["top1"] - int8["top1"]
    assert "the fastest **fp32.onnx** row on the same runtime and batch" in res.output
    alone = bench(zoo["int8"], "--json", tmp_path / "alone.json", *FAST)
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "alone.json").read_text())["rows"][0]["speedup"] is None
    assert "Baseline for speed-up (p50 ratio) and top-1 drop (points): none" in alone.output


def test_batch_sizes_per_model_runtimes_and_plots(zoo, tmp_path):
    res = bench(f"{zoo['fp32']}@openvino", zoo["int8"], "-b", "1", "-b", "4", "--plots", tmp_path,
                "--data", zoo["photos"], "--limit", "5", "--json", tmp_path / "r.json", *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(r["model"], r["runtime"], r["batch_size"]) for r in doc["rows"]] == [
        ("fp32.onnx", "openvino", 1), ("fp32.onnx", "openvino", 4),
        ("int8.onnx", "onnxruntime", 1), ("int8.onnx", "onnxruntime", 4),
    ]  # fmt: skip
    assert doc["data"]["images"] == 5 and doc["data"]["available_images"] == 24
    assert doc["rows"][3]["latency"]["throughput_ips"] > 0 and doc["rows"][3]["speedup"] is None
    assert doc["rows"][3]["baseline"] is None  # fp32.onnx ran on openvino only: nothing to divide by
    for name in ("accuracy_vs_latency.png", "latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_openvino_ir_reads_its_metadata_and_counts_on_a_sibling_onnx(zoo, tmp_path):
    out = tmp_path / "r.json"
    res = bench(
        zoo["ir"], zoo["lone_ir"], "--data", zoo["photos"], "--reference", zoo["fp32"], "--json", out, *FAST
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    beside, lone = doc["models"]
    assert beside["classes"] == lone["classes"] == CLASSES and "rt_info" in lone["classes_source"]
    assert beside["compute"]["macs"] == TINY_MACS and beside["compute"]["source"].startswith(
        "sibling fp32.onnx"
    )
    assert lone["compute"]["gmacs"] is None and lone["compute"]["source"].startswith("unknown: no .onnx")
    assert [r["runtime"] for r in doc["rows"]] == ["openvino", "openvino"]
    assert all(r["agreement"] == 1.0 for r in doc["rows"])
    assert "| lone/fp32.xml | openvino-auto | 1 |" in res.output


def test_openvino_hints_are_recorded_and_bf16_without_hardware_is_flagged(zoo, tmp_path):
    out = tmp_path / "r.json"
    res = bench(
        zoo["fp32"], "-r", "openvino", "--precision", "bf16", "--hint", "THROUGHPUT", "--json", out, *FAST
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    row = doc["rows"][0]
    assert row["precision"] == "bf16" and row["perf_hint"] == "THROUGHPUT" and row["threads"] == 1
    assert row["runtime_label"] == "openvino-bf16"
    assert row["runtime_options"]["options"]["config"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    native = {"avx512_bf16", "amx_bf16"} & set(doc["environment"]["isa_flags"])
    assert any("without native bf16" in n for n in doc["notes"]) is not bool(native)
    res = bench(zoo["fp32"], "--precision", "fp16", *FAST)
    assert res.exit_code == 7 and "unknown --precision 'fp16'; fix: use auto|f32|bf16" in res.output


def test_torch_checkpoint_runs_on_torch_and_its_onnx_export_agrees(imagefolder, tmp_path):
    from edgepipe.models.build import build_model
    from edgepipe.recipe import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(arch="mobilenet_v3_small", pretrained="none", width_mult=0.25)
    model, _ = build_model(cfg, 3)
    ckpt = {"arch": cfg.arch, "model_cfg": cfg.model_dump(), "num_classes": 3, "classes": CLASSES,
            "preprocessing": {**PRE, "resize": 36}, "state_dict": model.state_dict()}  # fmt: skip
    torch.save(ckpt, tmp_path / "model.pt")
    pt = tmp_path / "model.pt"
    res = bench(pt, "-r", "torch", "-r", "onnxruntime", "--data", imagefolder, "--limit", "12",
                "--reference", pt, "--json", tmp_path / "r.json", *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    m = doc["models"][0]
    assert m["kind"] == "checkpoint" and m["compute"]["source"].startswith("temporary ONNX export")
    assert m["compute"]["gmacs"] > 0 and m["thop_check"]["ratio_graph_over_thop"] == pytest.approx(1, abs=0.2)
    torch_row, ort_row = doc["rows"]
    assert (
        torch_row["runtime"] == "torch"
        and ort_row["agreement"] == 1.0
        and doc["reference"]["runtime"] == "torch"
    )


def test_foreign_model_uses_flags_and_needs_them_for_data(zoo, tmp_path):
    res = bench(zoo["foreign"], "--data", zoo["photos"], *FAST)
    assert res.exit_code == 7 and "has no edgepipe metadata" in res.output and "--image-size" in res.output
    norm = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
    res = bench(zoo["foreign"], "--data", zoo["photos"], "--image-size", "32", "--classes",
                "class_2,class_1,class_0", *norm, "--json", tmp_path / "r.json", *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    model = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert model["classes_source"] == "--classes" and model["preprocessing_source"] == "flags"
    assert model["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and model["input_size"] == [3, 32, 32]
    res = bench(zoo["foreign"], *FAST)  # latency only: its fixed 32x32 input is enough
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("model.onnx", b"hello", "not an ONNX model"),
        ("model.txt", b"hello", "not a model file edgepipe bench reads"),
        ("model.pt", b"hello", "not a torch checkpoint"),
        ("model.xml", b"<net>", "not an ONNX model or IR OpenVINO can read"),
    ],
)
def test_a_file_that_is_not_a_model_is_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    res = bench(tmp_path / name, *FAST)
    assert res.exit_code == 7 and message in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_a_torch_file_that_is_not_an_edgepipe_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "model.pt")
    res = bench(tmp_path / "model.pt", *FAST)
    assert res.exit_code == 7 and "missing arch, model_cfg" in res.output


def test_input_size_or_layout_that_does_not_match_the_data(zoo, tmp_path):
    res = bench(zoo["foreign"], "--data", zoo["photos"], "--image-size", "64", *FAST)
    assert (
        res.exit_code == 7 and "expects input (?, 3, 32, 32)" in res.output and "(?, 3, 64, 64)" in res.output
    )
    nhwc = export(tmp_path / "nhwc.onnx", channels_last=True)
    res = bench(nhwc, "--data", zoo["photos"], "--image-size", "32", *FAST)
    assert res.exit_code == 7 and "channels-last (NHWC)" in res.output
    fixed = export(tmp_path / "fixed.onnx", {"classes": CLASSES, "preprocessing": PRE}, dynamic=False)
    res = bench(fixed, "-b", "4", *FAST)
    assert res.exit_code == 7 and "fixed batch of 1" in res.output


def test_a_dataset_with_classes_the_model_lacks_names_them(zoo, tmp_path):
    two = export(tmp_path / "two.onnx", {"classes": ["class_0", "class_1", "cat"], "preprocessing": PRE})
    res = bench(two, "--data", zoo["photos"], *FAST)
    assert res.exit_code == 7 and "class(es) class_2 that two.onnx lacks" in res.output


def test_missing_or_impossible_runtime(zoo, monkeypatch):
    res = bench(zoo["fp32"], "-r", "tensorrt", *FAST)
    assert res.exit_code == 7 and "unknown runtime 'tensorrt'" in res.output
    res = bench(f"{zoo['fp32']}@torch", *FAST)
    assert res.exit_code == 7 and "cannot run on torch" in res.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    res = bench(zoo["fp32"], "-r", "openvino", *FAST)
    assert (
        res.exit_code == 6 and "runtime 'openvino' is not installed; fix: pip install openvino" in res.output
    )


def test_gates_fail_with_exit_8_after_the_report(zoo, tmp_path):
    out = tmp_path / "r.json"
    res = bench(zoo["fp32"], zoo["int8"], "--data", zoo["photos"], "--fail-if", "size_mb>100",
                "--fail-if", "acc_drop>-1000", "--json", out, *FAST)  # fmt: skip
    assert res.exit_code == 8, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: gate failed: acc_drop>-1000 on int8.onnx / onnxruntime / batch 1: value ")
    assert "| int8.onnx | onnxruntime |" in res.output  # the table is printed before the failure
    gates = json.loads(out.read_text())["gates"]
    assert [(g["gate"], g["passed"]) for g in gates] == [
        ("size_mb>100", True), ("size_mb>100", True), ("acc_drop>-1000", False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fail-if", "acc_drop>>0.5"], "malformed gate 'acc_drop>>0.5'"),
        (["--fail-if", "latency>3"], "unknown gate metric 'latency'"),
        (["--fail-if", "speedup<1.5"], "fix: give two or more models"),
        (["--fail-if", "top1<50"], "needs accuracy; fix: pass --data"),
    ],
)
def test_bad_gates_fail_before_any_timing(zoo, args, message):
    res = bench(zoo["fp32"], *args, *FAST)
    assert res.exit_code == 7 and message in res.output and len(res.output.strip().splitlines()) == 1


def test_builtin_dataset_test_split(tmp_path):
    from edgepipe.data.sources import FASHION_MNIST_CLASSES
    from edgepipe.errors import DataError

    try:
        from edgepipe.bench.accuracy import open_data

        data = open_data("fashion-mnist", limit=20)
    except DataError:
        pytest.skip("Fashion-MNIST files are not installed")
    assert data.available == 10000 and len(data.samples) == 20 and data.classes == FASHION_MNIST_CLASSES
    model = export(tmp_path / "fm.onnx", {"classes": FASHION_MNIST_CLASSES[:3], "preprocessing": PRE})
    res = bench(model, "--data", "fashion-mnist", "--limit", "20", *FAST)
    assert (
        res.exit_code == 7
        and "class(es) Dress, Coat, Sandal, Shirt, Sneaker and 2 more that fm.onnx lacks" in res.output
    )


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_sees_an_allocation():
    with PeakMemory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
    result = mem.result()
    assert result["peak_delta_mb"] >= 50 and "VmHWM" in result["method"]

"""Shared fixtures: tiny generated data and recipes (no network, CPU only)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("EDGEPIPE_PROGRESS", "0")
os.environ.setdefault("EDGEPIPE_AUTOTUNE_CACHE", "off")  # tests never write the user's timing cache


def make_imagefolder(
    root: Path, classes: int = 3, per_class: int = 20, size: int = 36, seed: int = 0
) -> Path:
    """Classes that a CNN can tell apart: each has its own colour and stripe orientation, plus noise."""
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        stripes = ((xx if c % 2 == 0 else yy) // 4 % 2).astype(np.float32)
        for i in range(per_class):
            base = np.array(palette[c % len(palette)], np.float32) * (0.6 + 0.4 * stripes[..., None])
            img = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "photos")


def load_script(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package), for tests of its parts."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Training as written, not as timed: autotune's choice depends on the machine's load, and at toy sizes its
# measuring (4 steps for each of 2-4 candidates) costs as much as the training. AUTOTUNE turns it back on for
# the tests about it (test_pipeline_e2e.py records the decision of both training stages).
NO_AUTOTUNE = {"channels_last": "off", "compile": "off"}
AUTOTUNE = {"finetune": {"channels_last": "auto", "compile": "auto", "amp": "auto"},
            "qat": {"channels_last": "auto", "compile": "auto"}}  # fmt: skip


def tiny_recipe(root: Path, name: str = "tiny", **over) -> dict:
    """A recipe small enough to run all stages in well under a minute on 2 cores (each section's keys given
    in ``over`` replace those keys only)."""
    recipe = {
        "name": name,
        "seed": 0,
        "data": {
            "root": str(root),
            "image_size": 32,
            "crop_pct": 1.0,
            "batch_size": 16,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "augment": {"hflip": True, "rrc_scale": None},
        },
        "model": {"arch": "mobilenet_v3_large", "pretrained": "none", "width_mult": 0.25, "bn_momentum": 0.3},
        "finetune": {"epochs": 6, "lr": 0.005, "patience": 6, **NO_AUTOTUNE, "amp": "off"},
        "qat": {
            "epochs": 1,
            "lr": 0.0001,
            "freeze_bn_epoch": 0,
            "freeze_observer_epoch": 1,
            "calibration_batches": 2,
            **NO_AUTOTUNE,
        },
        "export": {"min_agreement": 0.8, "openvino": True},
        "targets": ["host"],  # the emulated targets: tests/targets/ and test_pipeline_e2e.py (targets: null)
        "ptq": {"calibration_images": 16},
        # 2 alternating rounds exercise the paired speed-ups; the default 15 cost ~7 s a build here
        "bench": {"warmup": 2, "min_iters": 5, "min_seconds": 0.0, "paired_rounds": 2},
    }
    for k, v in over.items():
        recipe[k] = {**recipe[k], **v} if isinstance(v, dict) else v
    return recipe


def hold_run_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir`` as a build does, until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from edgepipe.artifacts import run_lock
        with run_lock({str(run_dir)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def export_onnx(model, path: Path, shape: tuple[int, ...] = (1, 3, 32, 32), dynamic: bool = True) -> Path:
    """A float torch model to ONNX as the tests need it: opset 17, ``input`` -> ``logits``, dynamic batch."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation; tracer warnings on int(shape)
        torch.onnx.export(
            model.eval(),
            (torch.zeros(*shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )
    return path


def ort_quantize(fp32: Path, out: Path, fmt: str = "qdq", shape: tuple[int, ...] = (1, 3, 32, 32)) -> Path:
    """ONNX Runtime static quantization (per-channel, U8 activations x S8 weights) calibrated on a few seeded
    random inputs: ranges enough for graph-level tests, and fast."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    batches = iter([{"input": rng.standard_normal(shape, dtype=np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(batches, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format={"qdq": QuantFormat.QDQ, "qop": QuantFormat.QOperator}[fmt],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def calibrated_qdq_mnv3(num_classes: int = 4, width_mult: float = 0.25):
    """A tiny MobileNetV3 after QAT's prepare, 3 observed batches and frozen ranges/BN, as its QDQ twin."""
    import torch

    from edgepipe.models.build import build_model
    from edgepipe.quant.qat import freeze_bn_stats, freeze_observers, prepare_qat
    from edgepipe.quant.qdq import to_qdq_module
    from edgepipe.recipe import ModelConfig

    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(width_mult=width_mult), num_classes, quantizable=True)
    prepare_qat(model)
    for _ in range(3):
        model(torch.randn(8, 3, 32, 32))
    freeze_observers(model)
    freeze_bn_stats(model)
    return to_qdq_module(model.eval())

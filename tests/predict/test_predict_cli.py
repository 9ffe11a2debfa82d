"""`edgepipe predict`: a row per input in input order, broken files as rows, foreign models, --eval."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from edgepipe.cli import app
from edgepipe.quant.export import set_metadata
from tests.conftest import make_imagefolder

runner = CliRunner()
CLASSES = ["class_0", "class_1", "class_2"]
PRE = {"input_size": [3, 32, 32], "resize": 32, "crop": 32, "interpolation": "bilinear",
       "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip


def _export(path: Path, meta: dict | None, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))  # fmt: skip
    torch.onnx.export(
        body.eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
    )  # fmt: skip
    if meta is not None:
        proto = onnx.load(str(path))
        set_metadata(proto, meta)
        onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    photos = make_imagefolder(root / "photos", 3, 5, 32)
    return {
        "onnx": _export(root / "model.onnx", {"classes": CLASSES, "preprocessing": PRE}),
        "foreign": _export(root / "foreign.onnx", None),
        "fixed": _export(root / "fixed.onnx", None, dynamic=False),
        "photos": photos,
    }


def predict(*args) -> tuple:
    res = runner.invoke(app, ["predict", *map(str, args)])
    return res, res.stdout


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _expected_probs(model: Path, files: list[Path]) -> np.ndarray:
    """Each file on its own through ORT with the model's preprocessing: what row i must say."""
    import onnxruntime as ort

    from edgepipe.data.transforms import eval_transform
    from edgepipe.models.preprocessing import Preprocessing

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    tf = eval_transform(Preprocessing.from_dict(PRE))
    logits = np.concatenate(
        [sess.run(None, {"input": tf(Image.open(f).convert("RGB")).numpy()[None]})[0] for f in files]
    )
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@pytest.mark.parametrize("batch, workers", [(4, 3), (1, 0)])
def test_rows_follow_input_order_and_match_each_image_alone(zoo, tmp_path, batch, workers):
    files = sorted(zoo["photos"].rglob("*.png"))
    order = files[::-1][:7] + [zoo["photos"] / "class_1"]  # a reversed pick, then a folder (sorted within)
    res, out = predict(zoo["onnx"], *order, "-b", batch, "--workers", workers, "--threads", 1, "-k", 3)
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    in_folder = sorted((zoo["photos"] / "class_1").glob("*"))
    expected_paths = [str(p) for p in files[::-1][:7]] + [str(p) for p in in_folder]
    assert [r["path"] for r in rows] == expected_paths
    want = _expected_probs(zoo["onnx"], [Path(p) for p in expected_paths])
    for r, w in zip(rows, want, strict=True):
        got = {r[f"label_{i}"]: float(r[f"prob_{i}"]) for i in (1, 2, 3)}
        assert got == pytest.approx({c: float(p) for c, p in zip(CLASSES, w, strict=True)}, abs=1e-5)
        assert float(r["prob_1"]) >= float(r["prob_2"]) >= float(r["prob_3"]) and r["error"] == ""
    assert f"{len(rows)} inputs, {len(rows)} rows" in res.stderr


def test_broken_inputs_get_error_rows_the_run_goes_on_and_strict_fails(zoo, tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(zoo["photos"] / "class_0", d)
    (d / "img_001b_text.png").write_text("not a png")
    good = (d / "img_002.png").read_bytes()
    (d / "img_003b_truncated.png").write_bytes(good[: len(good) // 2])
    (d / "img_004b_empty.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("mixed/img_000.png\nmixed/gone.png\n")
    res, out = predict(zoo["onnx"], d, listing, "--out", tmp_path / "p.csv", "--json", tmp_path / "p.json",
                       "-b", 2, "--threads", 1)  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = _rows((tmp_path / "p.csv").read_text())
    n_inputs = len(list(d.iterdir())) + 2
    assert len(rows) == n_inputs and out == ""
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"img_001b_text.png", "img_003b_truncated.png", "img_004b_empty.jpg", "gone.png"}
    assert errors["gone.png"] == "file not found" and "unreadable image" in errors["img_001b_text.png"]
    assert all(bool(r["label_1"]) != bool(r["error"]) for r in rows)  # a label or an error, never both
    assert f"{n_inputs} inputs, {n_inputs} rows" in res.stderr and "4 unreadable" in res.stderr
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["schema"] == "edgepipe.predict/2" and doc["inputs"] == n_inputs and doc["errors"] == 4
    assert [r["path"] for r in doc["rows"]] == [r["path"] for r in rows]
    top = doc["rows"][0]["top"]
    assert len(top) == 3 and sum(t["prob"] for t in top) == pytest.approx(1.0, abs=1e-5)

    res, _ = predict(zoo["onnx"], d, "--strict", "--out", tmp_path / "s.csv", "--threads", 1)
    assert res.exit_code == 3 and "3 of" in res.output and "--strict" in res.output
    assert len(_rows((tmp_path / "s.csv").read_text())) == n_inputs - 2  # the CSV is still written


def test_nothing_readable_is_one_line_error(zoo, tmp_path):
    (tmp_path / "bad.png").write_text("no")
    res, _ = predict(zoo["onnx"], tmp_path / "bad.png")
    assert res.exit_code == 3 and "none of the 1 inputs" in res.output


def test_foreign_model_needs_flags_then_uses_them(zoo, tmp_path):
    img = sorted(zoo["photos"].rglob("*.png"))[:3]
    res, _ = predict(zoo["foreign"], *img)
    assert res.exit_code == 7 and "--image-size" in res.output
    flags = ["--image-size", 32, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--threads", 1]
    res, out = predict(zoo["foreign"], *img, *flags, "--classes", "cat,dog,bird", "-k", 2)
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert len(rows) == 3 and {r["label_1"] for r in rows} <= {"cat", "dog", "bird"}
    assert "prob_3" not in rows[0]
    want = _expected_probs(zoo["foreign"], img)  # same preprocessing as PRE: identical probabilities
    assert [float(r["prob_1"]) for r in rows] == pytest.approx(want.max(1).tolist(), abs=1e-5)
    res, out = predict(zoo["foreign"], *img, *flags)  # no class names: output indices
    assert res.exit_code == 0 and _rows(out)[0]["label_1"].startswith("#")
    res, _ = predict(zoo["foreign"], *img, *flags, "--classes", "a,b")
    assert res.exit_code == 7 and "3 outputs but 2 class names" in res.output


def test_fixed_batch_model_is_padded_and_every_input_predicted(zoo):
    img = sorted(zoo["photos"].rglob("*.png"))[:5]
    res, out = predict(zoo["fixed"], *img, "--image-size", 32, "-b", 4, "--threads", 1)
    assert res.exit_code == 0, res.output
    assert len(_rows(out)) == 5 and "fixed batch of 1" in res.output


def test_eval_on_an_imagefolder_agrees_with_bench(zoo, tmp_path):
    res, _ = predict(zoo["onnx"], zoo["photos"], "--eval", "--json", tmp_path / "p.json", "--out",
                     tmp_path / "p.csv", "--threads", 1)  # fmt: skip
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "p.json").read_text())["evaluation"]
    bench = runner.invoke(app, ["bench", str(zoo["onnx"]), "--data", str(zoo["photos"]), "--json",
                                str(tmp_path / "b.json"), "--warmup", "1", "--min-iters", "2",
                                "--min-seconds", "0", "--threads", "1"])  # fmt: skip
    assert bench.exit_code == 0, bench.output
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert ev["images"] == row["images"] == 15
    keys = ("top1", "top5", "macro_f1")
    assert [ev[k] for k in keys] == pytest.approx([row[k] for k in keys])
    assert "top-1" in res.stderr and f"macro F1 {ev['macro_f1']:.2f} %" in res.stderr  # a %, like top-1
    res, _ = predict(zoo["onnx"], zoo["photos"] / "class_0", zoo["photos"] / "class_1", "--eval")
    assert res.exit_code == 3 and "exactly one input folder" in res.output

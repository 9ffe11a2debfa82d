"""Classification metrics, top-5 in evaluate(), the confusion PNG, and what the stages record."""

import json

import numpy as np
import pytest
import torch

from edgepipe.bench.accuracy import score_logits
from edgepipe.pipeline import build
from edgepipe.recipe import parse_recipe
from edgepipe.train.loop import evaluate
from edgepipe.train.metrics import classification_metrics, confusion_matrix, macro_f1, plot_confusion, summary
from tests.conftest import make_imagefolder, tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_rows_are_true_classes_columns_predictions():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_macro_scores_and_per_class_accuracy_match_hand_computation():
    # class 0: tp 1, predicted 2, support 2 -> P 1/2, R 1/2;  class 1: tp 1, pred 2, support 1 -> P 1/2, R 1
    # class 2: tp 2, predicted 2, support 3 -> P 1, R 2/3;  class 3: never seen nor predicted -> not averaged
    m = classification_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ["a", "b", "c", "d"], top5=100.0)
    f1 = [0.5, 2 * 0.5 / 1.5, 2 * (2 / 3) / (5 / 3)]
    assert m["top1"] == pytest.approx(100 * 4 / 6) and m["top5"] == 100.0 and m["n"] == 6
    assert m["macro_precision"] == pytest.approx(100 * (0.5 + 0.5 + 1) / 3)
    assert m["macro_recall"] == pytest.approx(100 * (0.5 + 1 + 2 / 3) / 3)
    assert m["macro_f1"] == pytest.approx(100 * sum(f1) / 3)
    per = {c["class"]: c for c in m["per_class"]}
    assert per["c"]["accuracy"] == pytest.approx(100 * 2 / 3) and per["d"]["accuracy"] is None
    assert per["a"]["support"] == 2 and per["b"]["precision"] == pytest.approx(50.0)
    s = summary(m)
    assert "confusion" not in s and s["per_class_accuracy"]["b"] == pytest.approx(100.0)


def test_bench_and_training_score_the_same_macro_f1_in_percent():
    # class 3 is predicted but never a label: it counts (scikit-learn's convention) in both, as 0
    labels, preds = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 3, 1, 2, 0, 2])
    want = classification_metrics(labels, preds, ["a", "b", "c", "d", "e"])["macro_f1"]
    logits = np.eye(5, dtype=np.float32)[preds]  # argmax = preds
    assert score_logits(logits, labels)["macro_f1"] == want == macro_f1(labels, preds)
    assert want == pytest.approx(100 * (2 * 0.5 * 0.5 + 2 * (2 / 3) / (5 / 3) + 1) / 4)


def test_evaluate_reports_top5_from_the_logits():
    # Identity "model": the inputs are the logits. Label ranks: 1st, 2nd, 5th, 6th of 7 classes.
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0]]).repeat(4, 1)
    labels = torch.tensor([0, 1, 4, 5])
    out = evaluate(torch.nn.Identity(), [(logits, labels)], torch.device("cpu"))
    assert out["top1"] == pytest.approx(25.0) and out["top5"] == pytest.approx(75.0)
    assert out["preds"] == [0, 0, 0, 0] and out["labels"] == [0, 1, 4, 5]
    two = evaluate(
        torch.nn.Identity(), [(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))], torch.device("cpu")
    )
    assert two["top5"] == 100.0  # with fewer than five classes, top-5 is top-k of all classes


def test_confusion_png_is_written_for_forty_classes(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"a_rather_long_class_name_{i}" for i in range(40)]
    y = rng.integers(0, 40, 400)
    cm = confusion_matrix(y, np.where(rng.random(400) < 0.7, y, rng.integers(0, 40, 400)), 40)
    path = plot_confusion(cm, classes, tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary left behind


@pytest.mark.slow  # trains through the pipeline
def test_finetune_and_qat_record_val_and_test_metrics_and_write_test_reports(tmp_path):
    root = make_imagefolder(tmp_path / "photos", classes=3, per_class=6, size=32)
    recipe = parse_recipe(tiny_recipe(root, stages=["finetune", "qat"], finetune={"epochs": 1}))
    build(recipe, tmp_path / "out")
    run = tmp_path / "out" / recipe.name
    for stage in ("finetune", "qat"):
        metrics = json.loads((run / stage / "manifest.json").read_text())["metrics"]
        for part in ("val", "test"):
            m = metrics[part]
            assert set(m) >= {
                "top1",
                "top5",
                "macro_precision",
                "macro_recall",
                "macro_f1",
                "per_class_accuracy",
            }
            assert m["top5"] == 100.0 and list(m["per_class_accuracy"]) == ["class_0", "class_1", "class_2"]
            assert m["top1"] == pytest.approx(metrics[f"{part}_top1"])
        report = json.loads((run / stage / "metrics_test.json").read_text())
        assert report["classes"] == ["class_0", "class_1", "class_2"]
        assert np.asarray(report["confusion"]).sum() == report["n"] == metrics["test"]["n"]
        assert (run / stage / "confusion_test.png").read_bytes()[:8] == PNG
    history = (run / "finetune" / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_top5" in history and "lr" in history

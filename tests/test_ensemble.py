"""edgepipe ensemble: member checks, the linear combiner's guarantee, one composed ONNX graph, bench rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgepipe.cli import app
from edgepipe.errors import DataError, ModelError, StageError
from edgepipe.experiments.ensemble import (
    BenchSettings,
    Member,
    build_ensemble,
    check_members,
    fit_linear,
    load_member,
)
from tests.conftest import make_imagefolder, tiny_recipe

FAST = BenchSettings(threads=1, warmup=1, min_iters=3, min_seconds=0.0, rounds=2)  # paired rounds: 2, not 15


def _member(name: str, classes=("a", "b"), size=32, split="s1") -> Member:
    meta = {"classes": list(classes), "preprocessing": {"input_size": [3, size, size]}}
    return Member(name, Path(name), Path(), Path(), Path(), split, meta)


def test_check_members_refuses_in_one_line_what_cannot_be_one_graph_on_one_split():
    check_members([_member("a"), _member("b")])
    cases = [
        ([_member("a")], ModelError, "at least two runs"),
        ([_member("a"), _member("a")], ModelError, "given twice"),
        ([_member("a"), _member("b", classes=("a", "c"))], ModelError, "differ in classes"),
        ([_member("a"), _member("b", size=64)], ModelError, "differ in preprocessing"),
        ([_member("a"), _member("b", split="s2")], DataError, "different splits"),
    ]
    for members, error, words in cases:
        with pytest.raises(error, match=words) as info:
            check_members(members)
        assert "\n" not in str(info.value) and "fix:" in str(info.value)


def test_load_member_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(StageError, match="not a finished run"):
        load_member(tmp_path)


def _noisy_logits(y: np.ndarray, classes: int, right: np.ndarray, rng) -> np.ndarray:
    """Logits that pick the true class where ``right``, another class elsewhere."""
    z = rng.normal(0, 0.3, (len(y), classes)).astype(np.float32)
    wrong = (y + 1) % classes
    z[np.arange(len(y)), np.where(right, y, wrong)] += 2.0
    return z


def test_fit_linear_scores_at_least_the_best_member_on_val_and_beats_it_when_members_complement():
    rng = np.random.default_rng(0)
    c, n = 4, 400
    y = rng.integers(0, c, n)
    # member 0 is right on the first classes, member 1 on the last: a per-class weighting beats both
    right0, right1 = y < 2, y >= 2
    logits = [_noisy_logits(y, c, right0 | (rng.random(n) < 0.3), rng), _noisy_logits(y, c, right1, rng)]
    train, val = [z[:300] for z in logits], [z[300:] for z in logits]
    comb = fit_linear(train, y[:300], val, y[300:], ["m0", "m1"])
    top1 = 100 * (comb.apply(val).argmax(1) == y[300:]).mean()
    best_member = max(100 * (z.argmax(1) == y[300:]).mean() for z in val)
    assert top1 >= best_member + 10
    assert comb.chosen.startswith("trained") and comb.weight.shape == (2 * c, c)

    # members that are useless together: the chosen layer is still no worse than the best member on val
    same = [_noisy_logits(y, c, rng.random(n) < 0.9, rng), _noisy_logits(y, c, rng.random(n) < 0.2, rng)]
    comb = fit_linear([z[:300] for z in same], y[:300], [z[300:] for z in same], y[300:], ["good", "bad"])
    assert 100 * (comb.apply([z[300:] for z in same]).argmax(1) == y[300:]).mean() >= max(
        100 * (z[300:].argmax(1) == y[300:]).mean() for z in same
    )
    by_name = {c["candidate"]: c["val_top1"] for c in comb.candidates}
    assert {"member good alone", "member bad alone", "logit average"} <= set(by_name)


# --- two tiny runs, end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from edgepipe.pipeline import build
    from edgepipe.recipe import parse_recipe

    tmp = tmp_path_factory.mktemp("ensemble")
    data = make_imagefolder(tmp / "photos", classes=3, per_class=16, size=36)
    out = tmp / "runs"
    dirs = []
    for name, lr in (("a", 0.005), ("b", 0.002)):
        raw = tiny_recipe(
            data,
            name=name,
            stages=["finetune", "qat", "export"],
            finetune={"epochs": 2, "lr": lr},
            export={"min_agreement": 0.5, "openvino": False},
        )
        build(parse_recipe(raw), out, reuse_from=dirs)  # b reuses a's split: one split for both
        dirs.append(out / name)
    return tmp, dirs


def _val_top1(path: Path, member: Member) -> float:
    from edgepipe.experiments.ensemble import split_arrays
    from edgepipe.runtimes import get_runtime

    x, y = split_arrays(member, "val")
    return 100 * float((get_runtime("onnxruntime", path, threads=1).predict(x).argmax(1) == y).mean())


@pytest.mark.slow
def test_linear_ensemble_is_one_graph_benched_beside_its_members_and_no_worse_on_val(runs):
    import onnx

    tmp, dirs = runs
    out = tmp / "ens-linear"
    report = build_ensemble(dirs, "linear", out, FAST)
    members = [load_member(d) for d in dirs]

    # one graph per precision, each member's nodes under its prefix, one input, one output
    for prec in ("fp32", "int8"):
        g = onnx.load(str(out / f"{prec}.onnx")).graph
        assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["logits"]
        assert any(n.name.startswith("m0_") for n in g.node) and any(n.name.startswith("m1_") for n in g.node)
        assert g.node[-1].op_type == "Add" and any(n.op_type == "MatMul" for n in g.node)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / "int8.onnx")).graph.node)

    # on validation, measured here through ORT: at least the best member, in FP32 and in INT8 (whose layer
    # learns the INT8 members' own logits)
    summary = json.loads((out / "ensemble.json").read_text())
    for prec in ("fp32", "int8"):
        ens = _val_top1(out / f"{prec}.onnx", members[0])
        assert ens >= max(_val_top1(getattr(m, prec), m) for m in members)
        assert summary["val_top1"]["ensemble"][prec] == pytest.approx(ens)
        assert summary["export_check"][prec]["agreement_with_combiner"] == 1.0
        assert summary["chosen"][prec] and summary["candidates"][prec]

    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"a fp32", "a int8", "b fp32", "b int8", "ensemble fp32", "ensemble int8"}
    members_macs = rows["a fp32"]["gmacs"] + rows["b fp32"]["gmacs"]
    assert members_macs < rows["ensemble fp32"]["gmacs"] < members_macs * 1.01  # + the combiner's MatMul
    assert rows["ensemble int8"]["int8_mac_share"] > 0.9
    assert all(r["top1"] is not None and r["latency"]["p50_ms"] > 0 for r in rows.values())
    assert "| ensemble fp32 | onnxruntime |" in (out / "report.md").read_text()
    assert (out / "accuracy_vs_latency.png").exists()


@pytest.mark.slow
def test_mean_ensemble_outputs_the_average_softmax(runs):
    from edgepipe.experiments.ensemble import softmax, split_arrays
    from edgepipe.runtimes import get_runtime

    tmp, dirs = runs
    out = tmp / "ens-mean"
    build_ensemble(dirs, "mean", out, FAST)
    members = [load_member(d) for d in dirs]
    x, _ = split_arrays(members[0], "val")
    probs = get_runtime("onnxruntime", out / "fp32.onnx", threads=1).predict(x)
    each = [softmax(get_runtime("onnxruntime", m.fp32, threads=1).predict(x)) for m in members]
    expected = np.mean(each, 0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_ensemble_command_refuses_a_run_given_twice_in_one_line(runs):
    tmp, dirs = runs
    res = CliRunner().invoke(app, ["ensemble", str(dirs[0]), str(dirs[0]), "--out", str(tmp / "x")])
    assert res.exit_code == 4 and res.output.strip().splitlines() == [
        "error: a run is given twice; fix: give each member run once"
    ]


def test_ensemble_command_refuses_an_unknown_combiner(tmp_path):
    res = CliRunner().invoke(app, ["ensemble", "a", "b", "--combine", "vote", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--combine vote: unknown" in res.output

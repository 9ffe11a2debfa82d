"""The measurement core: every entry timed alone, then in alternating paired rounds; one baseline rule."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgepipe.bench.harness import alternating_rounds, paired_ratio, paired_spread
from edgepipe.bench.measure import Entry, Settings, measure


class Sleeper:
    """A stand-in runtime that takes ``ms`` per call and logs every call."""

    name = "onnxruntime"

    def __init__(self, ms: float, log: list[str] | None = None, key: str = "") -> None:
        self.ms, self.log, self.key = ms, log, key
        self.options = {"threads": 1}
        self.input_shape = (None, 3, 4, 4)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.log is not None:
            self.log.append(self.key)
        time.sleep(self.ms / 1e3)
        return np.zeros((len(x), 2), np.float32)

    def describe(self) -> dict:
        return {"runtime": self.name, "options": dict(self.options), "input_shape": list(self.input_shape)}


def _entry(model: str, ms: float, is_float: bool, tmp_path: Path, top1: float = 90.0) -> Entry:
    f = tmp_path / f"{model}.onnx"
    f.write_bytes(b"x" * 100)
    return Entry(model=model, file=f, kind="onnx", runtime="onnxruntime", build=lambda: Sleeper(ms),
                 input_size=[3, 4, 4], compute={"gflops": 0.1, "source": "test"}, is_float=is_float,
                 score=lambda rt: {"top1": top1})  # fmt: skip


FAST = Settings(threads=1, warmup=1, min_iters=3, min_seconds=0.0, rounds=3, round_warmup=2, round_iters=2,
                round_min_seconds=0.0, settle_s=0.0)  # fmt: skip


def test_each_round_warms_every_model_up_then_times_it_in_one_turn():
    log: list[str] = []
    rts = {k: Sleeper(0.0, log, k) for k in "ab"}
    calls = alternating_rounds(rts, np.zeros((1, 3, 4, 4), np.float32), rounds=3, iters=4, warmup=2)
    assert {k: [len(r) for r in v] for k, v in calls.items()} == {"a": [4, 4, 4], "b": [4, 4, 4]}
    turns = [log[i : i + 6] for i in range(0, len(log), 6)]  # warm-up 2 + timed 4, one model per turn
    assert len(turns) == 6 and all(len(set(t)) == 1 for t in turns)
    assert all({turns[2 * r][0], turns[2 * r + 1][0]} == {"a", "b"} for r in range(3))


def test_paired_ratio_and_its_spread_are_taken_within_rounds():
    base, row = [2.0, 2.0, 4.0, 4.0], [1.0, 1.0, 2.0, 1.0]  # the machine slowed 2x after two rounds
    assert paired_ratio(base, row) == 2.0
    assert paired_spread(base, row) == [2.0, 2.5]
    assert paired_ratio(base, None) is None and paired_spread([], []) is None


def test_the_baseline_is_the_fastest_float_entry_whatever_the_order(tmp_path):
    entries = [_entry("int8", 1.0, False, tmp_path, 89.0), _entry("fp32-slow", 6.0, True, tmp_path, 90.0),
               _entry("fp32", 3.0, True, tmp_path, 91.0)]  # fmt: skip
    m = measure(entries, FAST)
    int8, slow, fast = m.rows
    assert m.baseline == {"model": "float", "models": ["fp32-slow", "fp32"],
                          "match": ["runtime", "batch_size"], "pick": "fastest"}  # fmt: skip
    assert fast["is_baseline"] and not slow["is_baseline"] and int8["baseline"]["model"] == "fp32"
    assert int8["acc_drop"] == 2.0 and int8["speedup"] > 1.5
    for r in m.rows:
        assert len(r["latency"]["round_medians_ms"]) == 3
    lo, hi = int8["speedup_paired_iqr"]
    assert lo <= int8["speedup_paired"] <= hi and int8["speedup_paired"] > 1.5
    assert m.settings["paired_rounds"] == 3 and m.settings["round_warmup"] == 2
    doc = m.document(settings={"runtimes": None, "precision": "f32", "hint": "LATENCY", "gates": []},
                     data=None, models=[], gates=[], notes=[], plots={})  # fmt: skip
    from edgepipe.bench.schema import validate_document

    validate_document(doc)


def test_a_reference_model_is_the_baseline_and_no_float_model_means_none(tmp_path):
    entries = [_entry("int8", 1.0, False, tmp_path), _entry("fp32", 3.0, True, tmp_path)]
    m = measure(entries, Settings(**{**FAST.__dict__, "rounds": 0}), reference="int8")
    assert m.rows[0]["is_baseline"] and m.rows[1]["baseline"]["model"] == "int8"
    assert "round_medians_ms" not in m.rows[0]["latency"] and m.rows[1]["speedup_paired"] is None
    alone = measure([_entry("int8", 1.0, False, tmp_path)], FAST)
    assert alone.baseline["models"] == [] and alone.rows[0]["speedup"] is None


@pytest.mark.parametrize("rounds", [0, 2])
def test_settings_say_how_the_rounds_ran(rounds):
    s = Settings(rounds=rounds).describe()
    assert s["paired_rounds"] == rounds and (s["round_iters"] is None) == (rounds == 0)

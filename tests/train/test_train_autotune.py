"""autotune: candidates per setting, the decision rule, measuring that leaves training untouched, the cache,
clean fall-back from a failing candidate, and that every candidate trains to the same loss."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepipe.errors import StageError
from edgepipe.train import autotune
from edgepipe.train.autotune import Candidate, Settings
from edgepipe.train.loop import FitSettings, fit

CPU = torch.device("cpu")
AUTO = Settings(channels_last="auto", compile="auto", amp="auto")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 3),
    )


def _loader(n: int = 20, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 12, 12, generator=g), torch.arange(n) % 3)
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(1))


def _fit(model, epochs: int = 2, **options):
    torch.manual_seed(1)  # dropout masks: each run starts from the same stream
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return fit(model, _loader(), _loader(), optimizer=optimizer, scheduler=None,
               criterion=nn.CrossEntropyLoss(), device=CPU,
               settings=FitSettings(epochs=epochs, patience=epochs, **options))


def test_cpu_candidates_are_the_plain_loop_first_then_layouts_bf16_only_with_native_support(monkeypatch):
    monkeypatch.setattr(autotune, "native_bf16", lambda device: False)
    names = [c.name for c in autotune.candidates(AUTO, CPU)]
    assert names == ["nchw-fp32", "channels-last", "compile", "compile+channels-last"]
    monkeypatch.setattr(autotune, "native_bf16", lambda device: True)
    names = [c.name for c in autotune.candidates(AUTO, CPU)]
    assert names[:4] == ["nchw-fp32", "channels-last", "bf16", "channels-last+bf16"]
    assert names[4:] == ["compile", "compile+channels-last"]  # compiled in float32 only: a small set


def test_fixed_settings_leave_one_candidate_and_cuda_auto_amp_stays_float16():
    assert autotune.candidates(Settings("on", "off", "off"), CPU) == [Candidate(channels_last=True)]
    assert autotune.candidates(Settings("off", "on", "bf16"), CPU) == [Candidate(compile=True, amp="bf16")]
    cuda = autotune.candidates(Settings("auto", "off", "auto"), torch.device("cuda"))
    assert [c.name for c in cuda] == ["fp16", "channels-last+fp16"]


def test_decide_needs_a_margin_and_counts_compile_time_over_the_planned_steps():
    cands = autotune.candidates(Settings("auto", "auto", "off"), CPU)
    t = {"nchw-fp32": {"step_ms": 100.0}, "channels-last": {"step_ms": 97.0},
         "compile": {"step_ms": 60.0, "compile_s": 30.0}, "compile+channels-last": {"error": "boom"}}
    assert autotune.decide(t, cands, planned_steps=100)[0].name == "nchw-fp32"  # 6+30 s > 10 s; 3%: noise
    chosen, why = autotune.decide(t, cands, planned_steps=2000)  # 200 s vs 120 s + 30 s
    assert chosen.name == "compile" and "compile 30 s included" in why
    t["channels-last"]["step_ms"] = 65.0
    assert autotune.decide(t, cands, planned_steps=100)[0].name == "channels-last"


def test_measuring_leaves_training_exactly_as_without_it(monkeypatch):
    """With nothing winning (an impossible margin), auto trains bit-for-bit as off: the measurement ran
    on copies and restored every random stream."""
    monkeypatch.setattr(autotune, "MARGIN", 1.0)
    plain, auto = _net(), _net()
    r_plain = _fit(plain)
    r_auto = _fit(auto, channels_last="auto", amp="auto", compile="auto")
    assert r_auto.speed["source"] == "measured" and r_auto.speed["chosen"] == "nchw-fp32"
    assert r_auto.speed["timings"]["channels-last"]["steps"] >= 2
    assert "skipped" in r_auto.speed["timings"]["compile"]  # 6 tiny steps cannot pay for a compile
    assert [h["train_loss"] for h in r_auto.history] == [h["train_loss"] for h in r_plain.history]
    for a, b in zip(plain.state_dict().values(), auto.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_failing_candidate_is_dropped_with_one_log_line(monkeypatch, caplog):
    def broken(module):
        raise RuntimeError("inductor says no\nlong traceback")

    monkeypatch.setattr(autotune, "compile_module", broken)
    monkeypatch.setattr(autotune, "PRIOR_COMPILE_S", 0.0)  # so compile is worth timing
    monkeypatch.setattr(autotune, "PRIOR_COMPILE_STEPS", 0)
    with caplog.at_level(logging.WARNING, logger="edgepipe.train.autotune"):
        result = _fit(_net(), channels_last="off", compile="auto")
    assert result.speed["timings"]["compile"] == {"error": "RuntimeError: inductor says no"}
    assert not result.speed["compile"] and result.speed["chosen"] == "nchw-fp32"
    assert len([r for r in caplog.records if "compile failed" in r.getMessage()]) == 1


def test_a_candidate_far_slower_than_the_fastest_stops_being_timed(monkeypatch):
    monkeypatch.setattr(autotune._Runner, "step", lambda self: 0.5 if self.cand.channels_last else 0.1)
    net = _net()
    cands = autotune.candidates(Settings("auto", "off", "off"), CPU)
    batch = autotune.probe_batch(_loader(), CPU)
    t = autotune.measure(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), batch, CPU,
                         cands, planned_steps=100)
    assert t["nchw-fp32"]["steps"] == autotune.ROUNDS and "abandoned" not in t["nchw-fp32"]
    assert t["channels-last"]["steps"] == 2 and "abandoned" in t["channels-last"]  # a best of two
    assert autotune.decide(t, cands, 100)[0].name == "nchw-fp32"


def test_timings_are_cached_by_key_and_the_decision_remade_from_them(monkeypatch, tmp_path):
    cache = tmp_path / "autotune.json"
    monkeypatch.setenv(autotune.CACHE_ENV, str(cache))
    first = _fit(_net(), epochs=1, channels_last="auto")
    doc = json.loads(cache.read_text())
    (entry,) = doc["entries"].values()
    assert entry["key"]["input"] == [8, 3, 12, 12] and entry["key"]["torch"] == torch.__version__
    assert set(entry["timings"]) == {"nchw-fp32", "channels-last"}

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(autotune, "measure", no_measuring)
    second = _fit(_net(), epochs=1, channels_last="auto")
    assert first.speed["source"] == "measured" and second.speed["source"] == "cache"
    assert second.speed["timings"] == entry["timings"]
    monkeypatch.setenv(autotune.CACHE_ENV, "off")
    assert autotune.cache_path() is None


def test_compiled_module_runs_a_batch_of_another_shape_eagerly(monkeypatch):
    calls = []

    def fake_compile(module, **options):
        assert options["options"] == {"fallback_random": True} and options["dynamic"] is False
        return lambda x: calls.append(tuple(x.shape)) or module(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = autotune.compile_module(_net())
    net(torch.randn(4, 3, 12, 12))
    net(torch.randn(2, 3, 12, 12))  # the short last batch: eager, no second compile
    net(torch.randn(4, 3, 12, 12))
    assert calls == [(4, 3, 12, 12), (4, 3, 12, 12)]
    assert len(list(net.parameters())) == len(list(_net().parameters()))  # one set of weights


def test_an_explicit_compile_that_fails_stops_with_a_one_line_fix(monkeypatch):
    def failing(module, **options):
        def run(x):
            raise RuntimeError("no C++ compiler\ntraceback")

        return run

    monkeypatch.setattr(torch, "compile", failing)
    message = r"torch.compile failed \(RuntimeError: no C\+\+ compiler\); fix: set compile"
    with pytest.raises(StageError, match=message):
        _fit(_net(), compile="on")


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"channels_last": "on"},
        {"compile": "on"},
        {"compile": "on", "channels_last": "on"},
        {"amp": "bf16"},
        {"amp": "bf16", "channels_last": "on"},
    ],
    ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_candidate_trains_the_tiny_model_to_the_plain_loss(options):
    """Same init, data order and dropout masks: the candidates differ by rounding only (bf16 by more)."""
    plain = [h["train_loss"] for h in _fit(_net()).history]
    other = _fit(_net(), **options)
    tol = 5e-2 if options.get("amp") == "bf16" else 1e-4
    assert [h["train_loss"] for h in other.history] == pytest.approx(plain, rel=tol)
    assert other.speed["source"] == "fixed" and other.speed["chosen"] == autotune.candidates(
        Settings(**{"channels_last": "off", "compile": "off", "amp": "off", **options}), CPU)[0].name

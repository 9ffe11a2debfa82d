"""time_callable must honour both stopping rules and keep the cold call out of the statistics."""

from __future__ import annotations

import time

import pytest

from edgepipe.bench.timing import ISA_FLAGS, PACKAGES, environment, time_callable
from edgepipe.errors import BenchInputError


def test_cheap_callable_meets_min_iters() -> None:
    result = time_callable(lambda: sum(range(50)), warmup=2, min_iters=200, min_seconds=0.0, batch_size=8)
    assert result["iters"] >= 200
    assert result["min_ms"] <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["std_ms"] >= 0 and result["batch_size"] == 8
    assert result["throughput_ips"] == pytest.approx(8 * 1000 / result["mean_ms"])


def test_min_seconds_is_respected() -> None:
    start = time.perf_counter()
    result = time_callable(lambda: sum(range(50)), warmup=0, min_iters=1, min_seconds=0.05)
    assert time.perf_counter() - start >= 0.05
    assert result["iters"] * result["mean_ms"] >= 50 * (1 - 1e-9)
    assert result["iters"] > 1


def test_cold_call_is_reported_apart_and_warmup_not_timed() -> None:
    calls: list[int] = []

    def fn() -> None:
        if not calls:
            time.sleep(0.03)  # a slow first call, as with lazy session init
        calls.append(1)

    result = time_callable(fn, warmup=3, min_iters=5, min_seconds=0.0)
    assert result["cold_ms"] >= 30
    assert result["p50_ms"] < 30
    assert len(calls) == 3 + result["iters"]


@pytest.mark.parametrize(
    "kwargs", [{"warmup": -1}, {"min_iters": 0}, {"min_seconds": -1.0}, {"batch_size": 0}]
)
def test_bad_budget_is_rejected(kwargs: dict[str, float]) -> None:
    args = {"warmup": 1, "min_iters": 1, "min_seconds": 0.0, "batch_size": 1, **kwargs}
    with pytest.raises(BenchInputError, match="fix:"):
        time_callable(lambda: None, **args)  # type: ignore[arg-type]


def test_environment_has_the_keys() -> None:
    env = environment()
    assert {"cpu_model", "logical_cores", "isa_flags", "os", "python", "packages"} <= set(env)
    assert env["cpu_model"] and env["logical_cores"] >= 1
    assert set(env["isa_flags"]) <= set(ISA_FLAGS)
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["numpy"] != "absent"


def test_cpu_name_names_the_microarchitecture(tmp_path, monkeypatch):
    from edgepipe.bench import timing

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(timing, "_CPUINFO", cpuinfo)
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n")
    assert timing.cpu_name() == "amd-epyc-zen5"
    cpuinfo.write_text(
        "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nstepping\t: 7\n"
        "model name\t: Intel(R) Xeon(R) CPU @ 2.50GHz\n"
    )
    assert timing.cpu_name() == "intel-xeon-cascadelake"
    cpuinfo.write_text("vendor_id\t: Other\ncpu family\t: 9\nmodel\t\t: 1\nmodel name\t: Foo Bar 9000\n")
    assert timing.cpu_name() == "foo-bar-f9m1"

"""Memory layout, torch.compile and autocast chosen by measurement at the start of training.

Which of NCHW or channels-last, eager or compiled, float32 or bfloat16 trains fastest depends on the CPU (or
GPU), the model and the input size: on a 2-core Zen 5 channels-last and torch.compile each beat the plain
loop by half or more while bf16 autocast is slower despite AVX512_BF16; another CPU orders them
differently. So ``auto`` is decided like cuDNN's benchmark mode: a few timed training steps of each
candidate, on deep copies of the model and optimiser (the real ones and the random streams are untouched,
so measuring never changes what is trained), candidates alternating in rounds so that load from other
processes hits all alike, each scored by its median step time.

A candidate is chosen only if its time over the stage's planned steps, plus its compile time, beats the
plain loop (NCHW, eager, float32, or what the fixed settings make it) by ``MARGIN``; otherwise the plain
loop trains. Compiled candidates are timed only when a compile could pay for itself over the planned steps
(a tiny run never waits for a compile). A candidate that fails (a compile error, an op without a kernel)
is dropped with one log line. Timings are cached in a small JSON file keyed by device, threads, model,
input shape, batch size and torch version, and the decision is remade from them for each stage's planned
steps. ``EDGEPIPE_AUTOTUNE_CACHE`` names the file (``off``: no cache); the default is
``$XDG_CACHE_HOME/edgepipe/autotune.json`` (``~/.cache``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.cpu import cpu_info
from edgepipe.cpu import native_bf16 as cpu_native_bf16

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEPIPE_AUTOTUNE_CACHE"
SCHEMA = "edgepipe.autotune/1"
MARGIN = 0.05  # a candidate must save 5% of the plain loop's time to be chosen: less is within the noise
WARMUP_STEPS = 1  # untimed steps per candidate (the first step of a compiled candidate is its compile)
ROUNDS = 3  # timed steps per candidate, one per round, candidates alternating within each round
ABANDON = 4.0  # a candidate whose best of 2+ steps is this many times the fastest step is not timed further
# Whether a compile could pay, judged before timing one: at best MAX_COMPILE_GAIN times the fastest eager
# step (the Zen 5 numbers: 1.14x over channels-last), against a compile that takes at least
# PRIOR_COMPILE_S or PRIOR_COMPILE_STEPS eager steps (MobileNetV3-Large's forward + backward compile at 64 px
# took 183 s on the 2 shared Zen 5 cores under ~4x load, where its eager steps took 3-8 s; compile time grows
# with other load as the steps do). A compile of the same graph again (inductor's disk cache) took 8-14 s.
MAX_COMPILE_GAIN = 1.3
PRIOR_COMPILE_S = 60.0
PRIOR_COMPILE_STEPS = 250


@dataclass(frozen=True)
class Settings:
    """A recipe's channels_last / compile / amp values (auto | on | off; amp also bf16)."""

    channels_last: str = "off"
    compile: str = "off"
    amp: str = "off"

    @property
    def auto(self) -> bool:
        return "auto" in (self.channels_last, self.compile, self.amp)


@dataclass(frozen=True)
class Candidate:
    """One way to run the same training step."""

    channels_last: bool = False
    compile: bool = False
    amp: str | None = None  # None: float32; "bf16" or "fp16": that autocast dtype

    @property
    def name(self) -> str:
        parts = ["compile"] * self.compile + ["channels-last"] * self.channels_last + [self.amp or ""]
        return "+".join(p for p in parts if p) or "nchw-fp32"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Candidate:
        """The candidate a Decision's record names (``_chosen``'s keys)."""
        amp = record.get("amp", "off")
        return cls(bool(record["channels_last"]), bool(record["compile"]), None if amp == "off" else amp)

    def dtype(self):
        import torch

        return {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]


@dataclass
class Decision:
    """What trains, how it was decided, and the timings behind it (``record`` goes into the manifest)."""

    candidate: Candidate
    record: dict[str, Any] = field(default_factory=dict)


def native_bf16(device: Any) -> bool:
    """Whether the device computes bfloat16 natively (a CPU with AVX512_BF16 or AMX-BF16; a CUDA GPU that
    says so). Elsewhere bf16 autocast is emulated and never worth timing."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_native_bf16()


def candidates(settings: Settings, device: Any) -> list[Candidate]:
    """The candidates the settings allow, the baseline (the loop without measurement) first.

    On a CPU: NCHW and channels-last, each eager and compiled, and bf16 autocast (eager, both layouts)
    only with native bf16. On CUDA ``amp: auto`` stays float16 with loss scaling (not timed). Compiled
    candidates keep the baseline's dtype under ``compile: auto``, so the set stays small.
    """
    cuda = device.type == "cuda"
    layouts = [False, True] if settings.channels_last == "auto" else [settings.channels_last == "on"]
    if settings.amp == "auto":
        amps: list[str | None] = ["fp16"] if cuda else [None, *(["bf16"] if native_bf16(device) else [])]
    else:
        amps = [{"off": None, "bf16": "bf16", "on": "fp16"}[settings.amp]]
    compiles = [False, True] if settings.compile == "auto" else [settings.compile == "on"]
    out = []
    for compiled in compiles:
        for amp in amps if not compiled or len(compiles) == 1 else amps[:1]:
            out += [Candidate(layout, compiled, amp) for layout in layouts]
    return out


def compile_module(module: Any) -> Any:
    """torch.compile for training, wrapped so a batch of another shape (an epoch's short last batch) runs
    eagerly on the same parameters instead of paying for a second compile.

    ``fallback_random`` makes compiled dropout draw from torch's generator as eager does, so compiled and
    eager training differ only by floating-point rounding.
    """
    import torch

    from edgepipe.errors import StageError

    class ShapeStableCompiled(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner
            compiled = torch.compile(inner, dynamic=False, options={"fallback_random": True})
            object.__setattr__(self, "_compiled", compiled)  # not a submodule: one set of parameters
            object.__setattr__(self, "_shape", None)

        def forward(self, x):
            if self._shape is None:  # the first call compiles: name a failure as a recipe can fix it
                try:
                    out = self._compiled(x)
                except Exception as exc:  # noqa: BLE001 - dynamo, inductor or C++ compiler errors alike
                    raise StageError(
                        f"torch.compile failed ({_error_line(exc)}); fix: set compile: auto (falls back to "
                        "eager when a compile fails) or compile: off"
                    ) from exc
                object.__setattr__(self, "_shape", tuple(x.shape))
                return out
            return self._compiled(x) if tuple(x.shape) == self._shape else self.inner(x)

    return ShapeStableCompiled(module)


@contextlib.contextmanager
def preserved_rng(device: Any) -> Iterator[None]:
    """Restore torch's, Python's and NumPy's random streams afterwards: measuring must not shift the
    shuffles, augmentations and dropout masks of the training that follows."""
    import numpy as np
    import torch

    states = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def probe_batch(loader: Any, device: Any) -> tuple[Any, Any] | None:
    """A synthetic batch shaped like the loader's (values do not change a step's time); None when the
    loader's dataset cannot be indexed or has no fixed batch size. Reads one sample with the random
    streams preserved."""
    import torch

    batch_size = getattr(loader, "batch_size", None)
    dataset = getattr(loader, "dataset", None)
    if not batch_size or dataset is None:
        return None
    try:
        with preserved_rng(device):
            sample = dataset[0][0]
    except Exception as exc:  # noqa: BLE001 - any dataset; the plain loop then trains
        log.info("autotune: cannot read a sample from the train set (%s); training with the plain loop", exc)
        return None
    if not isinstance(sample, torch.Tensor) or sample.dim() != 3:
        return None
    g = torch.Generator().manual_seed(0)
    images = torch.randn((batch_size, *sample.shape), generator=g).to(device)
    return images, torch.zeros(batch_size, dtype=torch.long, device=device)


def device_key(device: Any) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        capability = list(torch.cuda.get_device_capability(device))
        return {"device": torch.cuda.get_device_name(device), "capability": capability}
    cpu = cpu_info()
    return {
        "device": cpu["model_name"],
        "cpu": f"family {cpu['family']} model {cpu['model']} stepping {cpu['stepping']}",
        "flags": hashlib.sha256(" ".join(sorted(cpu["flags"])).encode()).hexdigest()[:12],
        "threads": torch.get_num_threads(),
    }


def model_key(model: Any) -> dict[str, Any]:
    """The model as its step time sees it: class, module types (a QAT twin's fake-quant modules), parameter
    count and how many train (frozen blocks skip their weight gradients)."""
    params = list(model.parameters())
    types = sorted({type(m).__name__ for m in model.modules()})
    return {
        "model": type(model).__name__,
        "modules": hashlib.sha256(",".join(types).encode()).hexdigest()[:12],
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def cache_key(model: Any, batch: tuple[Any, Any], device: Any, cands: Sequence[Candidate]) -> dict[str, Any]:
    import torch

    return {
        **device_key(device),
        **model_key(model),
        "input": list(batch[0].shape),
        "torch": torch.__version__,
        "candidates": [c.name for c in cands],
    }


def cache_path() -> Path | None:
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgepipe" / "autotune.json"


def _key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.info("autotune: ignoring unreadable cache %s (%s)", path, exc)
        return {}
    return doc.get("entries", {}) if isinstance(doc, dict) and doc.get("schema") == SCHEMA else {}


def _write_cache(path: Path | None, key: dict[str, Any], timings: dict[str, Any]) -> None:
    """Add one entry (read, update, atomic replace: a concurrent writer may lose an entry, never corrupt
    the file; a lost entry is only measured again)."""
    if path is None:
        return
    from edgepipe.artifacts import atomic_write_json

    entries = _read_cache(path)
    entries[_key_id(key)] = {"key": key, "timings": timings, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        atomic_write_json(path, {"schema": SCHEMA, "entries": entries})
    except OSError as exc:
        log.info("autotune: cannot write the cache %s (%s); the next run measures again", path, exc)


class _Runner:
    """One candidate's training step on its own copy of the model, optimiser and frozen blocks."""

    def __init__(self, cand: Candidate, model, optimizer, criterion, batch, device, keep_eval: Sequence[Any]):
        import torch

        self.cand, self.device, self.criterion = cand, device, criterion
        self.model, self.optimizer, self.keep_eval = copy.deepcopy((model, optimizer, list(keep_eval)))
        images, self.labels = batch
        if cand.channels_last:
            self.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.images = images
        self.net = compile_module(self.model) if cand.compile else self.model
        self.scaler = torch.amp.GradScaler(device.type) if cand.amp == "fp16" else None
        self.times: list[float] = []
        self.warmup_s: list[float] = []

    def step(self) -> float:
        import torch

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self.net.train()
        for module in self.keep_eval:
            module.eval()
        sync()
        t0 = time.perf_counter()
        dtype = self.cand.dtype()
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss = self.criterion(self.net(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        sync()
        return time.perf_counter() - t0

    def timing(self) -> dict[str, Any]:
        step = statistics.median(self.times)
        out = {"step_ms": 1e3 * step, "steps": len(self.times), "warmup_ms": [1e3 * t for t in self.warmup_s]}
        if self.cand.compile:  # the compile is what the warm-up took beyond an ordinary step
            out["compile_s"] = max(0.0, sum(self.warmup_s) - step * len(self.warmup_s))
        return out


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _start(cands, timings, *parts) -> list[_Runner]:
    """Build and warm up each candidate; a failing one is recorded and dropped with one log line."""
    runners = []
    for cand in cands:
        try:
            runner = _Runner(cand, *parts)
            for _ in range(WARMUP_STEPS):
                runner.warmup_s.append(runner.step())
        except Exception as exc:  # noqa: BLE001 - any backend failure means: not this candidate
            timings[cand.name] = {"error": _error_line(exc)}
            log.warning("autotune: %s failed (%s); not using it", cand.name, timings[cand.name]["error"])
            continue
        runners.append(runner)
    return runners


def _rounds(runners: list[_Runner], timings: dict[str, Any]) -> list[_Runner]:
    """ROUNDS timed steps each, alternating (the order reversed every other round, ABBA-style). A candidate
    whose best step is ABANDON times the fastest so far stops being timed: it has lost, and its steps may be
    long (a compiled fake-quant QAT model took 28-31 s a step in a trial on the shared 2-core machine)."""
    alive, timed = list(runners), list(runners)
    for i in range(ROUNDS):
        for runner in list(alive if i % 2 == 0 else reversed(alive)):
            try:
                runner.times.append(runner.step())
            except Exception as exc:  # noqa: BLE001
                timings[runner.cand.name] = {"error": _error_line(exc)}
                log.warning("autotune: %s failed (%s); not using it", runner.cand.name,
                            timings[runner.cand.name]["error"])
                alive.remove(runner)
                timed.remove(runner)
        if i >= 1:  # a best of two steps: one step slowed by other load does not abandon a candidate
            fastest = min((t for r in alive for t in r.times), default=0.0)
            alive = [r for r in alive if min(r.times) <= ABANDON * fastest]
    for runner in timed:
        timings[runner.cand.name] = runner.timing()
        if runner not in alive:
            timings[runner.cand.name]["abandoned"] = f"over {ABANDON:g}x the fastest step"
    return timed


def _could_pay(best_eager_ms: float, compile_s: float | None, planned_steps: int) -> bool:
    """Could a compile, at MAX_COMPILE_GAIN, save its compile time (measured before, else the prior) over
    the planned steps?"""
    if compile_s is None:
        compile_s = max(PRIOR_COMPILE_S, PRIOR_COMPILE_STEPS * best_eager_ms / 1e3)
    saved_s = planned_steps * best_eager_ms / 1e3 * (1 - 1 / MAX_COMPILE_GAIN)
    return saved_s > compile_s


def measure(model, optimizer, criterion, batch, device, cands: Sequence[Candidate], planned_steps: int,
            keep_eval: Sequence[Any] = (), compile_s_hint: float | None = None) -> dict[str, Any]:
    """Time the candidates; by name, each one's {step_ms, steps, ...}, or {error} or {skipped}.

    Eager candidates first. Then, if a compile could pay over the planned steps, the one compiled
    candidate in the fastest eager layout and dtype (a compile costs tens of seconds on a CPU: one, not
    one per layout), timed again against the baseline and the fastest eager candidate.
    """
    parts = (model, optimizer, criterion, batch, device, keep_eval)
    timings: dict[str, Any] = {}
    eager = [c for c in cands if not c.compile]
    compiled = [c for c in cands if c.compile]
    with preserved_rng(device):
        runners = _rounds(_start(eager, timings, *parts), timings)
        if compiled and runners:
            best = min(runners, key=lambda r: timings[r.cand.name]["step_ms"])
            best_ms = timings[best.cand.name]["step_ms"]
            if not _could_pay(best_ms, compile_s_hint, planned_steps):
                why = f"a compile cannot pay back over {planned_steps} steps of {best_ms:.0f} ms"
                for cand in compiled:
                    timings[cand.name] = {"skipped": why, "could_pay": False}
                compiled = []
            else:
                form = (best.cand.channels_last, best.cand.amp)
                like = [c for c in compiled if (c.channels_last, c.amp) == form]
                for cand in (c for c in compiled if c not in like[:1]):
                    timings[cand.name] = {"skipped": f"compile timed in the faster form ({best.cand.name})"}
                compiled = like[:1] or compiled[:1]
                runners = list(dict.fromkeys([runners[0], best]))
                for r in runners:  # timed again, in the same window as the compiled one
                    r.times = []
        if compiled:
            _rounds(runners + _start(compiled, timings, *parts), timings)
    return timings


def decide(timings: dict[str, Any], cands: Sequence[Candidate], planned_steps: int) -> tuple[Candidate, str]:
    """The candidate with the least time over the planned steps (compile included), if it beats the
    baseline (cands[0]) by MARGIN; else the baseline. Returns it and the reason in words."""
    base = cands[0]

    def total_s(c: Candidate) -> float | None:
        t = timings.get(c.name, {})
        if "step_ms" not in t:
            return None
        return planned_steps * t["step_ms"] / 1e3 + t.get("compile_s", 0.0)

    if total_s(base) is None:
        ok = [c for c in cands if total_s(c) is not None]
        if not ok:
            return base, "no candidate could be timed"
        best = min(ok, key=total_s)
        return best, f"the baseline could not be timed; {best.name} is the fastest that could"
    best = min((c for c in cands if total_s(c) is not None), key=total_s)
    if best == base or total_s(best) > (1 - MARGIN) * total_s(base):
        return base, f"nothing beats {base.name} by {100 * MARGIN:.0f}% over {planned_steps} steps"
    speedup = timings[base.name]["step_ms"] / timings[best.name]["step_ms"]
    extra = f", compile {timings[best.name]['compile_s']:.0f} s included" if best.compile else ""
    return best, f"{speedup:.2f}x the steps of {base.name}; {total_s(best):.0f} s vs {total_s(base):.0f} s " \
                 f"over {planned_steps} steps{extra}"


def _cached_usable(entry: dict[str, Any] | None, cands, planned_steps: int) -> bool:
    """A cached measurement serves unless it skipped compiled candidates that could pay at this length."""
    if not entry:
        return False
    timings = entry["timings"]
    eager_ms = [t["step_ms"] for c in cands if not c.compile and "step_ms" in (t := timings.get(c.name, {}))]
    for c in cands:
        t = timings.get(c.name)
        if t is None:
            return False
        if t.get("could_pay") is False and eager_ms:
            if _could_pay(min(eager_ms), None, planned_steps):
                return False
    return True


def choose(model, optimizer, criterion, loader, device, settings: Settings, planned_steps: int,
           keep_eval: Sequence[Any] = (), stage: str = "train") -> Decision:
    """Decide how to train: fixed settings as given, ``auto`` ones by measurement (or its cached timings)."""
    import torch

    from edgepipe.train import distributed

    cands = candidates(settings, device)
    record: dict[str, Any] = {
        "settings": {"channels_last": settings.channels_last, "compile": settings.compile,
                     "amp": settings.amp},
        "planned_steps": planned_steps,
        "candidates": [c.name for c in cands],
    }
    if len(cands) == 1 or planned_steps == 0:
        why = "no auto setting" if len(cands) == 1 else "no training steps planned"
        return Decision(cands[0], {**record, **_chosen(cands[0]), "source": "fixed", "reason": why})
    decision = None
    if distributed.is_main():  # one rank measures; all train the same way
        decision = _measured(model, optimizer, criterion, loader, device, cands, planned_steps, keep_eval,
                             record, stage)
    decision = distributed.broadcast_object(decision)
    if decision.candidate.compile and not hasattr(torch, "compile"):  # pragma: no cover - torch < 2.0
        decision = Decision(cands[0], {**decision.record, **_chosen(cands[0])})
    return decision


def _chosen(c: Candidate) -> dict[str, Any]:
    return {"chosen": c.name, "channels_last": c.channels_last, "compile": c.compile, "amp": c.amp or "off"}


def _measured(model, optimizer, criterion, loader, device, cands, planned_steps, keep_eval, record,
              stage) -> Decision:
    batch = probe_batch(loader, device)
    if batch is None:
        return Decision(cands[0], {**record, **_chosen(cands[0]), "source": "fixed",
                                   "reason": "no batch shape to measure with"})
    key = cache_key(model, batch, device, cands)
    path = cache_path()
    entry = _read_cache(path).get(_key_id(key))
    t0 = time.perf_counter()
    if _cached_usable(entry, cands, planned_steps):
        timings, source = entry["timings"], "cache"
    else:
        hint = max([t.get("compile_s", 0.0) for t in (entry or {}).get("timings", {}).values()] or [0.0])
        timings = measure(model, optimizer, criterion, batch, device, cands, planned_steps, keep_eval,
                          compile_s_hint=hint or None)
        source = "measured"
        _write_cache(path, key, timings)
    chosen, reason = decide(timings, cands, planned_steps)
    measure_s = time.perf_counter() - t0
    log.info("%s autotune (%s, %.0f s): %s; %s", stage, source, measure_s, chosen.name, reason)
    return Decision(chosen, {**record, **_chosen(chosen), "source": source, "reason": reason,
                             "measure_s": round(measure_s, 2), "timings": timings, "key": key,
                             "cache": str(path) if path else None})

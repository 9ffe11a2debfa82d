"""The ``edgepipe.bench/3`` document as typed models: `edgepipe bench --json` and a run's report.json.

docs/report_schema.md explains every field; :func:`validate_document` checks a document against these models
(unknown keys are errors, so the code, the schema and the docs cannot drift apart silently).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgepipe.bench.report import SCHEMA
from edgepipe.errors import BenchInputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Environment(_Strict):
    cpu_model: str
    cpu_name: str
    logical_cores: int | None
    isa_flags: list[str]
    os: str
    python: str
    packages: dict[str, str]
    id: str


class Settings(_Strict):
    runtimes: list[str] | None
    threads: int
    batch_sizes: list[int]
    warmup: int
    min_iters: int
    min_seconds: float
    precision: str
    hint: str
    gates: list[str]
    # `edgepipe bench` only: the command line as given
    per_model_runtimes: dict[str, list[str]] | None = None
    data: str | None = None
    limit: int | None = None
    preprocessing_flags: dict[str, Any] | None = None
    reference: str | None = None
    opset: int | None = None
    targets: list[str] | None = None
    target_images: int | None = None
    devices: list[str] | None = None
    device_images: int | None = None
    max_top1_drop: float | None = None
    # the alternating paired rounds (edgepipe.bench.measure)
    paired_rounds: int | None = None
    round_warmup: int | None = None
    round_iters: int | None = None
    round_min_seconds: float | None = None


class Baseline(_Strict):
    model: str
    match: list[str]
    pick: Literal["same", "fastest"] = "same"  # fastest: the quickest of the model's rows that match
    models: list[str] | None = None  # model "float": the float models whose fastest matching row it is


class Data(_Strict):
    data: str
    kind: str
    classes: list[str]
    images: int
    available_images: int


class Reference(_Strict):
    model: str
    file: str
    runtime: str
    top1: float
    top5: float
    macro_f1: float | None
    images: int
    distinct_predictions: int


class Compute(_Strict):
    source: str
    macs: int | None
    gmacs: float | None
    gflops: float | None
    params: int | None
    int8_macs: int | None
    int8_mac_share: float | None
    by_op_type: dict[str, Any] | None


class Model(_Strict):
    name: str
    file: str
    kind: str
    sha256: str
    size_mb: float
    input_size: list[int]
    preprocessing: dict[str, Any] | None
    preprocessing_source: str
    classes: list[str] | None
    classes_source: str | None
    runtimes: list[str]
    compute: Compute
    # `edgepipe bench` only
    input_shape: list[int | None] | None = None
    thop_check: dict[str, Any] | None = None


class Latency(_Strict):
    cold_ms: float
    iters: int
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    throughput_ips: float
    batch_size: int
    round_medians_ms: list[float] | None = None


class Memory(_Strict):
    method: str
    rss_before_mb: float
    peak_rss_mb: float
    peak_delta_mb: float


class RowBaseline(_Strict):
    model: str
    runtime: str
    precision: str | None
    runtime_label: str
    batch_size: int


class Row(_Strict):
    model: str
    file: str
    kind: str
    runtime: str
    precision: str | None
    runtime_label: str
    perf_hint: str | None
    batch_size: int
    threads: int | None
    runtime_options: dict[str, Any]
    size_mb: float
    params: int | None
    gmacs: float | None
    gflops: float | None
    int8_mac_share: float | None
    compute_source: str | None
    latency: Latency
    memory: Memory | None
    top1: float | None
    top5: float | None
    macro_f1: float | None
    images: int | None
    distinct_predictions: int | None
    agreement: float | None
    top1_per_gflop: float | None
    top1_per_ms: float | None
    speedup: float | None
    speedup_paired: float | None = None
    speedup_paired_iqr: list[float] | None = None
    acc_drop: float | None
    is_baseline: bool
    baseline: RowBaseline | None
    environment_id: str


class GateResult(_Strict):
    gate: str
    model: str
    runtime: str
    batch_size: int
    value: float | None
    passed: bool
    reason: str | None = None


class StageSummary(_Strict):
    metrics: dict[str, Any]
    wall_time_s: float
    cached: bool


class TargetRow(_Strict):
    """A model checked on one target's own kernels (edgepipe/targets): numerics, and latency only natively or
    on a device (``how: device``: edgepipe bench --on ssh://..., with the device's own timing)."""

    model: str
    target: str
    title: str
    how: Literal["native", "emulated", "device", "not checked", "failed"]
    kernel: str
    runtime: str
    images: int
    agreement: float | None
    top1: float | None
    reason: str
    runtime_version: str | None
    cpu: dict[str, Any]
    wall_s: float | None
    latency_ms: float | None = None
    # how: device only
    latency: Latency | None = None
    peak_rss_mb: float | None = None
    speedup_paired: float | None = None


class VerdictRef(_Strict):
    model: str
    runtime_label: str
    top1: float | None
    p50_ms: float
    below_floor_by: float | None = None


class Verdict(_Strict):
    """Which model to ship on one runtime (bench/verdict.py); ``model`` None: not judged (``reason``)."""

    runtime: str
    batch_size: int
    max_top1_drop: float
    ranked_by: str
    model: str | None
    runtime_label: str | None
    p50_ms: float | None
    top1: float | None
    size_mb: float | None
    speedup: float | None
    speedup_paired: float | None
    floor: float | None
    best_float: VerdictRef | None
    fastest_float: VerdictRef | None
    passed_over: list[VerdictRef]
    reason: str


class Document(_Strict):
    schema_: Literal["edgepipe.bench/3"] = Field(alias="schema")
    created_utc: str
    edgepipe_version: str
    recipe: str | None
    environment: Environment
    settings: Settings
    baseline: Baseline
    data: Data | None
    reference: Reference | None
    models: list[Model]
    rows: list[Row]
    gates: list[GateResult]
    stages: dict[str, StageSummary] | None
    notes: list[str]
    plots: dict[str, str]
    targets: list[TargetRow] | None = None
    verdicts: list[Verdict] | None = None


MODELS: tuple[type[BaseModel], ...] = (
    Document, Environment, Settings, Baseline, Data, Reference, Model, Compute, Row, Latency, Memory,
    RowBaseline, GateResult, StageSummary, TargetRow, Verdict, VerdictRef,
)  # fmt: skip


def validate_document(doc: dict[str, Any]) -> Document:
    """The document as typed models; a one-line BenchInputError naming the first wrong field otherwise."""
    if doc.get("schema") != SCHEMA:
        raise BenchInputError(
            f"document schema is {doc.get('schema')!r}, not {SCHEMA}; fix: regenerate it with this edgepipe"
        )
    try:
        return Document.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BenchInputError(
            f"{SCHEMA} document: {where}: {err['msg']} ({exc.error_count()} problem(s)); fix: regenerate it "
            "with this edgepipe, or update edgepipe/bench/schema.py and docs/report_schema.md together"
        ) from None

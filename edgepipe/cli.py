"""The typer app: parses arguments, sets up logging, calls the library. No pipeline logic here.

Every EdgepipeError becomes one line on stderr and its exit code; never a traceback. Any other exception (a
bug, or an input nothing checks) becomes one line naming the file that holds its traceback, and exit 70.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from edgepipe import __version__
from edgepipe.errors import EdgepipeError, StageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="From a folder of labelled photos to a fast, honestly benchmarked INT8 classifier.",
)
log = logging.getLogger("edgepipe")


# what bench and predict need to run a model edgepipe did not export (no preprocessing in its metadata)
ForeignSize = Annotated[int | None, typer.Option(help="Foreign models: input size (square).")]
ForeignResize = Annotated[int | None, typer.Option(help="Foreign models: resize before the centre crop.")]
ForeignMean = Annotated[str | None, typer.Option(help="Foreign models: r,g,b mean (default ImageNet's).")]
ForeignStd = Annotated[str | None, typer.Option(help="Foreign models: r,g,b std (default ImageNet's).")]
ForeignClasses = Annotated[
    str | None, typer.Option(help="Foreign models: class names a,b,c or a file, one per line.")
]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    from edgepipe.train.distributed import is_main

    handler = RichHandler(
        show_path=False,
        show_time=True,
        markup=False,
        rich_tracebacks=False,
        console=__import__("rich.console").console.Console(stderr=True),
    )
    level = logging.DEBUG if verbose else logging.INFO
    if not is_main():  # under torchrun rank 0 logs; the others speak only when something breaks
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: EdgepipeError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


UNEXPECTED_EXIT = 70  # EX_SOFTWARE
ERROR_LOG = "edgepipe-error.log"


def _error_log_paths(run_dir: Path | None) -> list[Path]:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepipe" / "last-error.log"
    return ([run_dir / ERROR_LOG] if run_dir is not None else []) + [cache]


def _crash(exc: Exception, run_dir: Path | None = None) -> None:
    """One line naming the log that holds the traceback: beside the run when there is one, else the cache."""
    import click

    if isinstance(exc, click.exceptions.Exit | click.exceptions.ClickException | click.exceptions.Abort):
        raise exc  # typer's own exits and usage errors keep their meaning
    text = f"edgepipe {__version__}: {' '.join(sys.argv)}\n" + "".join(traceback.format_exception(exc))
    where = None
    for path in _error_log_paths(run_dir):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            where = path
            break
        except OSError:
            continue
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    saved = f"traceback in {where}" if where else "the traceback could not be written; rerun with -v"
    typer.echo(
        f"error: unexpected {type(exc).__name__}: {first} (an edgepipe bug, or an input it does not check); "
        f"{saved}; fix: report it with that file",
        err=True,
    )
    raise typer.Exit(UNEXPECTED_EXIT)


@contextlib.contextmanager
def _one_line_errors(interrupted: str | None = None, run_dir: Callable[[], Path | None] = lambda: None):
    """Every command's edge: an EdgepipeError is one line and its exit code, an unexpected exception one line
    naming the log with its traceback; Ctrl-C says what is kept (``interrupted``) when the command keeps
    anything."""
    try:
        yield
    except EdgepipeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        typer.echo(f"error: interrupted; {interrupted}", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback reaches a user
        _crash(exc, run_dir())


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgepipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """edgepipe: finetune -> qat -> export -> ptq -> bench, each stage cached with a manifest."""


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="A YAML recipe, e.g. recipes/mnv3_qat.yaml.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for runs; a run lands in OUT/<recipe name>/.")
    ] = Path("artifacts"),
    force: Annotated[
        bool, typer.Option("--force", help="Rerun every stage, ignoring cached results.")
    ] = False,
    from_stage: Annotated[
        str | None, typer.Option("--from", metavar="STAGE", help="Rerun this stage and all after it.")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only", metavar="STAGE", help="Run just this stage on the cached outputs of earlier ones."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue a killed finetune or qat from its last saved epoch."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run a recipe's stages in order; unchanged stages are skipped. Report: OUT/<recipe name>/report.json.

    Under torchrun (torchrun --nproc_per_node=N -m edgepipe build RECIPE) finetune and qat train with DDP."""
    _setup_logging(verbose)
    run_dir = None
    kept = "completed stages are kept, rerun the same command with --resume to continue"
    with _one_line_errors(kept, lambda: run_dir if run_dir is not None and run_dir.is_dir() else None):
        from edgepipe.pipeline import build as run_build
        from edgepipe.recipe import load_recipe

        r = load_recipe(recipe)
        run_dir = out / r.name
        if from_stage and only:
            raise EdgepipeError("--from and --only exclude each other; fix: give one of them")
        status = run_build(r, out, force=force, from_stage=from_stage, only=only, resume=resume)
    from edgepipe.train.distributed import is_main

    if not is_main():
        return
    run_dir = out / r.name
    ran = [n for n, s in status.items() if not s["cached"]]
    typer.echo(f"stages run: {', '.join(ran) or 'none (all cached)'}")
    report_md = run_dir / "report.md"
    if report_md.exists():
        typer.echo(report_md.read_text())
        typer.echo(f"report: {run_dir / 'report.json'}")


@app.command()
def bench(
    models: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL...",
            help="Models: .onnx, OpenVINO .xml, edgepipe model.pt, torch.export .pt2. The first is the "
            "baseline. MODEL@onnxruntime,openvino picks that model's runtimes.",
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(help="Accuracy data: a built-in name (fashion-mnist: test split) or an ImageFolder."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use a seeded random subset of this many images.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the edgepipe.bench/3 JSON here.")
    ] = None,
    fail_if: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if", metavar="GATE", help="e.g. 'acc_drop>0.5', 'speedup<1.5', 'p99_ms>10'; exit 8."
        ),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(metavar="MODEL", help="Report agreement (equal top-1) with this model.")
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            "--runtime", "-r", help="torch, onnxruntime, openvino (repeat); default: each model's own."
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads for every runtime.")] = 2,
    batch_size: Annotated[
        list[int] | None, typer.Option("--batch-size", "-b", help="Batch size(s) for latency (repeat).")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(help="OpenVINO precision: auto (f32 for float, plugin default for INT8), f32, bf16."),
    ] = "auto",
    hint: Annotated[str, typer.Option(help="OpenVINO performance hint: LATENCY or THROUGHPUT.")] = "LATENCY",
    plots: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Write PNG plots into this folder.")
    ] = None,
    image_size: ForeignSize = None,
    resize: ForeignResize = None,
    mean: ForeignMean = None,
    std: ForeignStd = None,
    classes: ForeignClasses = None,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs (the first is reported as cold).")] = 20,
    min_iters: Annotated[int, typer.Option("--min-iters", help="At least this many timed runs.")] = 100,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="And at least this much time.")] = 2.0,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="NAME",
            help="Also run each .onnx on this CPU's own ONNX Runtime kernels and score agreement with its "
            "host run (or --reference); needs --data. host, x86-64-v3, x86-64-v4, cortex-a72, cortex-a76 "
            "(repeat). Emulated targets: numerics only, no latency.",
        ),
    ] = None,
    target_images: Annotated[
        int,
        typer.Option("--target-images", metavar="N", help="--target: at most N images (a seeded subset)."),
    ] = 500,
    on: Annotated[
        list[str] | None,
        typer.Option(
            "--on",
            metavar="ssh://[USER@]HOST[:PORT]",
            help="Also bench each .onnx on this device over SSH (an ssh-config alias works: ssh://pi5): "
            "latency percentiles, cold start, peak RSS, top-1 and agreement there; needs --data; the device "
            "needs python3, numpy and onnxruntime (?python=PATH picks its python). Repeat for more devices.",
        ),
    ] = None,
    device_images: Annotated[
        int, typer.Option("--device-images", metavar="N", help="--on: at most N images go to the device.")
    ] = 500,
    max_top1_drop: Annotated[
        float,
        typer.Option(
            "--max-top1-drop", metavar="PT", min=0.0,
            help="'Which to ship': the fastest model within PT top-1 points of the best float "
            "(needs --data).",
        ),
    ] = 0.5,
    device_timeout: Annotated[
        float, typer.Option("--device-timeout", metavar="S", help="--on: one device run may take S seconds.")
    ] = 900.0,
    paired_rounds: Annotated[
        int,
        typer.Option(
            "--paired-rounds",
            help="Alternating rounds between the rows (and the models on each --on device): paired "
            "speed-ups with their spread (0: off).",
        ),
    ] = 15,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Benchmark models on runtimes: latency, memory, accuracy, MACs from the graph; gates exit 8."""
    _setup_logging(verbose)
    with _one_line_errors():
        from edgepipe.bench import accuracy, gates
        from edgepipe.bench.runner import BenchOptions, bench_models

        flags = accuracy.PreprocessingFlags.from_cli(image_size, resize, mean, std, classes)
        opts = BenchOptions(
            runtimes=runtime or None,
            threads=threads,
            batch_sizes=batch_size or [1],
            warmup=warmup,
            min_iters=min_iters,
            min_seconds=min_seconds,
            precision=precision,
            hint=hint,
            data=data,
            limit=limit,
            preprocessing=flags,
            reference=reference,
            gates=fail_if or [],
            json_out=json_out,
            plots_dir=plots,
            targets=target or None,
            target_images=target_images,
            devices=on or None,
            device_images=device_images,
            device_timeout=device_timeout,
            paired_rounds=paired_rounds,
            max_top1_drop=max_top1_drop,
        )
        result = bench_models(models, opts)
        typer.echo(result.markdown)
        gates.enforce(result.gates)


@app.command()
def predict(
    model: Annotated[
        Path,
        typer.Argument(help="An edgepipe .onnx, OpenVINO .xml or model.pt; or a foreign model + flags."),
    ],
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...", help="Image files, folders (recursive, sorted), .txt lists of paths."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="CSV of predictions (default: standard output).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes per row, best first.")] = 5,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", "-r", help="torch, onnxruntime or openvino (default: the model's)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per inference call.")] = 32,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads of the runtime (default: all CPUs).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding threads (0: decode inline).")] = 2,
    evaluate: Annotated[
        bool, typer.Option("--eval", help="INPUT is one ImageFolder: also print top-1/top-5/macro F1.")
    ] = False,
    strict: Annotated[bool, typer.Option(help="Exit 3 if any input could not be read.")] = False,
    image_size: ForeignSize = None,
    resize: ForeignResize = None,
    mean: ForeignMean = None,
    std: ForeignStd = None,
    classes: ForeignClasses = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Top-k classes for every input: one CSV row per input, in input order; unreadable files get an error
    row."""
    _setup_logging(verbose)
    with _one_line_errors():
        from edgepipe.artifacts import atomic_path, atomic_write_json
        from edgepipe.bench import accuracy
        from edgepipe.errors import DataError
        from edgepipe.predict import PredictOptions, write_csv
        from edgepipe.predict import predict as run_predict

        flags = accuracy.PreprocessingFlags.from_cli(image_size, resize, mean, std, classes)
        opts = PredictOptions(runtime=runtime, batch_size=batch_size, workers=workers, top_k=top_k,
                              preprocessing=flags, evaluate=evaluate)
        if threads is not None:
            opts.threads = threads
        result = run_predict(model, inputs, opts)
        if out is None:
            write_csv(result, sys.stdout)
        else:
            with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
                write_csv(result, fh)
        if json_out is not None:
            atomic_write_json(json_out, result.to_json())
        typer.echo(result.summary() + (f"\npredictions: {out}" if out else ""), err=True)
        if strict and result.errors:
            first = result.errors[0]
            raise DataError(
                f"{len(result.errors)} of {len(result.rows)} inputs could not be read (first: {first.path}: "
                f"{first.error}); fix: remove or replace them, or drop --strict"
            )


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="An edgepipe checkpoint: finetune/model.pt or qat/model.pt.")],
    images: Annotated[
        list[str], typer.Argument(metavar="IMAGE...", help="Image files, folders or .txt lists of paths.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the overlay PNGs and the grid.")],
    method: Annotated[
        str, typer.Option(help="gradcam, gradcam++, xgradcam, hirescam, layercam or eigencam.")
    ] = "gradcam",
    target_layer: Annotated[
        str | None,
        typer.Option("--target-layer", metavar="NAME", help="Module to explain (default: the arch's own)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Class activation maps: one overlay PNG per image (predicted class and probability) and a grid."""
    _setup_logging(verbose)
    with _one_line_errors():
        from edgepipe.explain import explain_images

        result = explain_images(model, images, out, method, target_layer)
    skipped = f"; {len(result.skipped)} unreadable input(s) skipped" if result.skipped else ""
    typer.echo(
        f"{len(result.overlays)} overlay(s), {method} at {result.layer} ({result.model.kind} model); "
        f"grid: {result.grid}{skipped}"
    )


@app.command()
def sweep(
    recipe: Annotated[Path, typer.Argument(help="The base recipe, e.g. recipes/smoke.yaml.")],
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="KEY=V1,V2",
            help="A recipe key and its values (repeat: a grid), e.g. finetune.lr=1e-3,3e-3.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder of the variants' runs and sweep.md (artifacts/NAME-sweep)."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (one after another) or ray (needs ray: the 'dist' extra).")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: an existing cluster's address (default RAY_ADDRESS or a local one)."),
    ] = None,
    cpus_per_variant: Annotated[
        int, typer.Option(min=1, help="ray: CPUs (and torch threads) per variant.")
    ] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed finetune or qat from its last saved epoch.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Build every variant of a grid (each its own run; unchanged stages are reused), then write
    OUT/sweep.md, sweep.json and an accuracy-vs-latency plot. Rerun the same command to resume."""
    _setup_logging(verbose)
    kept = ("finished variants and stages are kept, rerun the same command (add --resume to continue a "
            "killed finetune or qat) to continue")
    with _one_line_errors(kept):
        from edgepipe import pipeline
        from edgepipe.experiments.sweep import parse_set, run_sweep

        axes = [parse_set(s) for s in set_]
        doc = run_sweep(recipe, axes, out, engine, resume, ray_address, cpus_per_variant,
                        build=pipeline.build, plan=pipeline.plan)
        from edgepipe.experiments.sweep import markdown

        typer.echo(markdown(doc))
        failed = [e["name"] for e in doc["variants"] if e["status"] != "done"]
        if failed:
            raise StageError(
                f"{len(failed)} of {len(doc['variants'])} variants failed ({', '.join(failed)}); fix: see "
                "each error at the end of sweep.md, then rerun (finished variants are cached)"
            )


@app.command()
def ensemble(
    runs: Annotated[
        list[Path], typer.Argument(metavar="RUN...", help="Finished run folders (same classes and split).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the ensemble's graphs and report.")],
    combine: Annotated[
        str, typer.Option(help="mean (of softmax outputs) or linear (over logits, chosen on val).")
    ] = "linear",
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads for every runtime.")] = 2,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs per model.")] = 20,
    min_iters: Annotated[
        int, typer.Option("--min-iters", min=1, help="At least this many timed runs.")
    ] = 100,
    min_seconds: Annotated[float, typer.Option("--min-seconds", min=0, help="And this much time.")] = 2.0,
    paired_rounds: Annotated[
        int, typer.Option("--paired-rounds", min=0, help="Alternating rounds for paired speed-ups (0: off).")
    ] = 15,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Combine finished runs into one ONNX graph (FP32 and INT8) and bench it beside its members."""
    _setup_logging(verbose)
    with _one_line_errors():
        from edgepipe.experiments.ensemble import BenchSettings, build_ensemble

        timing = BenchSettings(threads=threads, warmup=warmup, min_iters=min_iters, min_seconds=min_seconds,
                               rounds=paired_rounds)  # fmt: skip
        build_ensemble(runs, combine, out, timing)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"ensemble: {out / 'fp32.onnx'}, {out / 'int8.onnx'}; report: {out / 'report.json'}")


def run() -> None:  # pragma: no cover - console entry for `python -m edgepipe`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - `torchrun -m edgepipe.cli build RECIPE`
    run()

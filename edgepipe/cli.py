"""The typer app: parses arguments, sets up logging, calls the library. No pipeline logic here.

Every EdgepipeError becomes one line on stderr and its exit code; never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgepipe import __version__
from edgepipe.errors import EdgepipeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="From a folder of labelled photos to a fast, honestly benchmarked INT8 classifier.",
)
log = logging.getLogger("edgepipe")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(
        show_path=False,
        show_time=True,
        markup=False,
        rich_tracebacks=False,
        console=__import__("rich.console").console.Console(stderr=True),
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", handlers=[handler], force=True
    )
    for noisy in ("matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: EdgepipeError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run a recipe's stages in order; unchanged stages are skipped. Report: OUT/<recipe name>/report.json."""
    _setup_logging(verbose)
    try:
        from edgepipe.pipeline import build as run_build
        from edgepipe.recipe import load_recipe

        r = load_recipe(recipe)
        if from_stage and only:
            raise EdgepipeError("--from and --only exclude each other; fix: give one of them")
        status = run_build(r, out, force=force, from_stage=from_stage, only=only)
    except EdgepipeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo(
            "error: interrupted; completed stages are kept, rerun the same command to resume", err=True
        )
        raise typer.Exit(130) from None
    run_dir = out / r.name
    ran = [n for n, s in status.items() if not s["cached"]]
    typer.echo(f"stages run: {', '.join(ran) or 'none (all cached)'}")
    report_md = run_dir / "report.md"
    if report_md.exists():
        typer.echo(report_md.read_text())
        typer.echo(f"report: {run_dir / 'report.json'}")


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX model files (.onnx).")],
    runtime: Annotated[list[str], typer.Option("--runtime", "-r", help="onnxruntime and/or openvino.")] = [  # noqa: B006
        "onnxruntime"
    ],
    threads: Annotated[int, typer.Option(help="Intra-op threads.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size for latency.")] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 20,
    min_iters: Annotated[int, typer.Option("--min-iters", help="At least this many timed runs.")] = 100,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="And at least this much time.")] = 2.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Benchmark ONNX models: GMACs counted from the graph, latency percentiles, size."""
    _setup_logging(verbose)
    try:
        from edgepipe.bench.cli import bench_models

        text = bench_models(models, runtime, threads, batch_size, warmup, min_iters, min_seconds, json_out)
    except EdgepipeError as exc:
        _fail(exc)
    typer.echo(text)


def run() -> None:  # pragma: no cover - console entry for `python -m edgepipe`
    sys.exit(app())

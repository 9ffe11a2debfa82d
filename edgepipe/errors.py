"""Typed errors. Library code raises these; only cli.py turns them into a one-line message and exit code."""


class EdgepipeError(Exception):
    """Base class: the message is one line that names the problem and the fix."""

    exit_code = 1


class RecipeError(EdgepipeError):
    exit_code = 2


class DataError(EdgepipeError):
    exit_code = 3


class ModelError(EdgepipeError):
    exit_code = 4


class StageError(EdgepipeError):
    exit_code = 5


class ParityError(StageError):
    """A converted model disagrees with its source beyond the recipe's tolerance."""


class RuntimeUnavailable(EdgepipeError):
    exit_code = 6


class RunFolderBusy(EdgepipeError):
    """Another build holds the run folder."""

    exit_code = 9


class BenchInputError(EdgepipeError):
    exit_code = 7


class GateFailed(EdgepipeError):
    exit_code = 8


class DeviceError(EdgepipeError):
    """A device reached over SSH (edgepipe bench --on) could not be benched: unreachable, refused, unknown
    host key, no python or runtime there, a run past its timeout."""

    exit_code = 10


def missing_dependency(package: str, extra: str | None = None) -> EdgepipeError:
    hint = f"pip install {package}" if extra is None else f"pip install 'edgepipe[{extra}]'"
    return EdgepipeError(f"the optional dependency '{package}' is not installed; fix: {hint}")

"""One stage per module, each declaring itself once as ``STAGE = StageSpec(...)`` (see base.py).

The registry finds the stage modules of this package, refuses a name or an output declared twice, and derives
the order from what each stage needs: adding a stage is adding its module (plus its recipe section in
recipe.py when it has options).
"""

from __future__ import annotations

import importlib
import pkgutil

from edgepipe.errors import StageError
from edgepipe.stages.base import StageSpec

_REGISTRY: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Add a stage; a second stage of the same name, or one handing on another's output, is refused."""
    if spec.name in _REGISTRY:
        raise StageError(f"stage '{spec.name}' is declared twice; fix: give the new stage another name")
    for other in _REGISTRY.values():
        shared = sorted(set(spec.outputs) & set(other.outputs))
        if shared:
            raise StageError(
                f"stages '{other.name}' and '{spec.name}' both hand on {', '.join(shared)}; fix: give each "
                "output one producer"
            )
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> dict[str, StageSpec]:
    """Import every module of this package once; those that declare ``STAGE`` are registered."""
    if not _REGISTRY:
        found = []
        for info in pkgutil.iter_modules(__path__):
            spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STAGE", None)
            if isinstance(spec, StageSpec):
                found.append(spec)
        try:
            for spec in found:
                register(spec)
        except StageError:
            _REGISTRY.clear()
            raise
    return _REGISTRY


def order(specs: dict[str, StageSpec] | None = None) -> tuple[str, ...]:
    """Every stage after the stages making what it needs (or uses when present); ties broken by name."""
    specs = _discover() if specs is None else specs
    maker = {out: s.name for s in specs.values() for out in s.outputs}
    after: dict[str, set[str]] = {}
    for s in specs.values():
        unmade = [n for n in s.needs if n not in maker]
        if unmade:
            raise StageError(f"stage '{s.name}' needs {', '.join(unmade)}, which no stage hands on; "
                             "fix: declare the output in the stage that writes it")
        after[s.name] = {maker[n] for n in (*s.needs, *s.optional) if n in maker} - {s.name}
    done: list[str] = []
    while len(done) < len(after):
        ready = sorted(n for n, deps in after.items() if n not in done and deps <= set(done))
        if not ready:
            left = sorted(set(after) - set(done))
            raise StageError(f"stages {', '.join(left)} need each other's outputs; fix: break the cycle")
        done.append(ready[0])
    return tuple(done)


def get(name: str) -> StageSpec:
    try:
        return _discover()[name]
    except KeyError:
        raise StageError(f"unknown stage '{name}'; fix: use one of {', '.join(order())}") from None


def listable() -> tuple[str, ...]:
    """The names a recipe's ``stages`` may list, in pipeline order (the others always run)."""
    return tuple(n for n in order() if not get(n).always)


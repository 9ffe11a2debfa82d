"""The CPUs an INT8 model ships to (registry), how this machine runs their kernels (emulation), the torch-free
runner that runs a model there (runner.py) and the check that scores it (check)."""

from edgepipe.targets.check import TargetResult, check_targets
from edgepipe.targets.registry import HOST, TARGETS, Placement, TargetSpec, host_target, placement, resolve

__all__ = [
    "HOST",
    "TARGETS",
    "Placement",
    "TargetResult",
    "TargetSpec",
    "check_targets",
    "host_target",
    "placement",
    "resolve",
]

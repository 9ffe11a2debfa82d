"""`edgepipe explain`: Grad-CAM (and other CAM methods) of float and QAT checkpoints, as PNG overlays."""

from edgepipe.explain.cam import METHODS, Explainable, explain_batch, load_explainable, target_layer
from edgepipe.explain.run import ExplainResult, explain_images

__all__ = [
    "METHODS", "ExplainResult", "Explainable", "explain_batch", "explain_images", "load_explainable",
    "target_layer",
]  # fmt: skip

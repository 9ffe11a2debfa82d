"""`edgepipe predict`: run a built (or foreign) model on files, folders and lists of photos."""

from edgepipe.predict.inputs import Input, expand_inputs
from edgepipe.predict.run import PredictOptions, PredictResult, Row, predict, write_csv

__all__ = ["Input", "PredictOptions", "PredictResult", "Row", "expand_inputs", "predict", "write_csv"]

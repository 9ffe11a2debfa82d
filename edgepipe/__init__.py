"""edgepipe: from a folder of labelled photos to a fast, honestly benchmarked INT8 classifier."""

__version__ = "0.1.0"

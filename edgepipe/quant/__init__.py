"""Everything torch-quantization-specific: QAT preparation, freezing, and the QDQ export form."""

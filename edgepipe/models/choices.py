"""The names ``model.attention``, ``model.fusion``, ``model.head`` and ``model.hybrid`` accept: a leaf
without torch, so the recipe and the registry can import it cheaply."""

ATTENTIONS = ("se", "eca", "cbam", "none")
FUSIONS = ("none", "multiscale")
# model.variant: the paper's block tables (minimalistic: no squeeze-excite, ReLU, 3x3 depthwise everywhere)
MNV3_VARIANTS = ("standard", "minimalistic")
HYBRIDS = ("none", "vit")

"""Constants every layer may import (a leaf, as timm's data/constants.py): nothing here imports edgepipe."""

# ImageNet normalisation on pixels scaled to [0, 1]: (x - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

"""Constants every layer may import (a leaf, as timm's data/constants.py): nothing here imports edgepipe."""

# ImageNet normalisation on pixels scaled to [0, 1]: (x - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's TensorFlow weights: (x - 127) / 128 on 0..255 pixels.
EFFICIENTNET_LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
EFFICIENTNET_LITE_STD = (128 / 255, 128 / 255, 128 / 255)

# CLI name -> pytorch_grad_cam class. All gradient/activation CAMs that need one forward + backward pass.
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}

# CPUs an INT8 model can be checked for (edgepipe/targets/registry.py describes each; `host` is this machine).
TARGET_NAMES = ("host", "x86-64-v3", "x86-64-v4", "cortex-a72", "cortex-a76")

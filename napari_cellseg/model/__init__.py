"""The network: Mask R-CNN builders, checkpoints, packing, built-in models, ONNX."""

"""Inference: a model folder to predictions (``predictor``), on PyTorch or ONNX Runtime, fp32 or
int8 (``runtime``), with concurrent requests' texts batched into one forward (``batching``)."""

"""The model zoo the tests and benchmarks share: PyTorch networks exported to ONNX (random weights)."""

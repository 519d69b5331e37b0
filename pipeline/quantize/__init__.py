"""Quantization: precision options, int8 calibration, the QDQ model, its int8 compute and accuracy.

Data flow: ``options`` (what was asked) -> ``int8`` (the hook compile and tune run on the cleaned-up
ONNX model: ``calibrate`` the ranges, ``qdq`` writes QuantizeLinear/DequantizeLinear, ``accuracy``
gates it) -> import -> ``rewrite`` (QDQ pairs around conv2d/matmul become int8 compute in Relax).
``select`` chooses each layer's precision by measured time (compile builds float32 and int8 and
keeps int8 only where it is faster). A new calibrator is one class in ``calibrate`` with
``@register``. CPU-specific int8 kernels (AVX-512 VNNI) live in backends/cpu/int8_dot.py.
"""

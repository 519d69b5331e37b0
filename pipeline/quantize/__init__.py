"""Quantization: precision options, int8 calibration, the QDQ model, its int8 compute and accuracy.

One module per phase, each a named step of the compile (their place in the order: README.md, "The
pipeline"): ``before_import`` (QOperator -> QDQ; the ``int8`` hook: ``calibrate`` the ranges, ``qdq``
writes QuantizeLinear/DequantizeLinear), ``after_import`` (``rewrite``: QDQ pairs around
conv2d/matmul become int8 compute in Relax), ``after_build`` (the artifact's ``accuracy`` and the
gate). ``select`` chooses each layer's precision by measured time (it builds float32 and int8
candidates and keeps int8 only where it is faster). ``options`` is what was asked. A new
calibrator is one class in ``calibrate`` with ``@register``. CPU-specific int8 kernels (AVX-512 VNNI) live in backends/cpu/int8_dot.py.
"""

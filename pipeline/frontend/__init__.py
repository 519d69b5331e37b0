"""The frontend: an ONNX file in, a Relax module out.

``load`` (read, external data, onnx.checker) -> ``cleanup`` (bind input shapes, fold shape
subgraphs, shape inference) -> ``qoperator`` (QOperator models to QDQ) -> ``importer`` (the
pre-check of unsupported ops, then TVM's ONNX frontend with deploy's converters). ``specs``
describes inputs and outputs; ``inspect`` is the `deploy inspect` report.
"""

"""The frontend: an ONNX file in, a Relax module out.

``load`` reads the file (external data, onnx.checker), ``cleanup`` binds input shapes, folds shape
subgraphs and infers shapes, ``qoperator`` rewrites QOperator models to QDQ, ``importer`` pre-checks
unsupported ops and runs TVM's ONNX frontend with deploy's converters; the order they run in, with
quantization's steps between them, is README.md's ("The pipeline"). ``specs`` describes inputs and
outputs; ``inspect`` is the `deploy inspect` report.
"""

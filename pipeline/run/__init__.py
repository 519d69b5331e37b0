"""The run side: load an artifact and run it here or on a board, against ONNX Runtime.

``runtime`` (load and run), ``reference`` (ONNX Runtime), ``check`` (the one verdict of compile's
check, ``verify`` and ``build``), ``verify``, ``bench`` (latency beside ONNX Runtime and peers),
``profile`` and ``profile_report`` (per-kernel times and their files), ``remote`` (an RPC tracker's boards).
The compile side calls in here to check the artifact it built and, for ``--precision auto``, to
time its kernels.
"""

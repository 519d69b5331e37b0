"""Tensor-core intrinsics, registered one by one as the rules need them.

Importing ``tvm.s_tir.tensor_intrin.cuda`` registers every CUDA intrinsic TVM knows (over a
hundred TVMScript functions parsed at import): 1.5 CPU-minutes on these machines, paid by every
compile. ``ensure`` runs that module's definitions without its registrations, then registers
only the intrinsics named (five for one GEMM schedule), under deploy's own names
("deploy.<TVM's name>"): TVM's module, when something imports it later (dlight's WMMA path, a
tuning run), registers its own names without a clash.
"""

from __future__ import annotations

import ast
from pathlib import Path

_ns: dict | None = None
_registers: dict[str, ast.stmt] = {}


def _load() -> dict:
    global _ns
    if _ns is not None:
        return _ns
    import tvm.s_tir

    path = Path(tvm.s_tir.__file__).parent / "tensor_intrin" / "cuda.py"
    tree = ast.parse(path.read_text())
    names: dict[str, str] = {}  # X_INTRIN -> "intrinsic name"
    body = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            names[node.targets[0].id] = node.value.value
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and ast.unparse(node.value.func) == "TensorIntrin.register":
            first = node.value.args[0]
            key = names.get(first.id) if isinstance(first, ast.Name) else getattr(first, "value", None)
            if key:
                _registers[key] = node
            continue
        if isinstance(node, ast.FunctionDef) and any("register_global_func" in ast.unparse(d) for d in node.decorator_list):
            node.decorator_list = []  # registered by TVM's own module if it is imported
        body.append(node)
    ns: dict = {"__name__": "deploy_cuda_tensor_intrin", "__file__": str(path)}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), ns)  # noqa: S102 - TVM's own source
    _ns = ns
    return ns


def namespace() -> dict:
    """The definitions of TVM's tensor_intrin/cuda.py (layouts, intrinsic makers, groups)."""
    return _load()


def ensure(intrinsic: str) -> str:
    """Register TVM's CUDA intrinsic ``intrinsic`` as "deploy.<intrinsic>" (once); returns that name."""
    from tvm.s_tir import TensorIntrin

    own = f"deploy.{intrinsic}"
    if TensorIntrin.get(own, allow_missing=True) is not None:
        return own
    ns = _load()
    node = _registers.get(intrinsic)
    if node is None:
        raise KeyError(f"TVM defines no CUDA tensor intrinsic '{intrinsic}'")
    call = node.value
    args = list(call.args)
    args[0] = ast.Constant(own)
    stmt = ast.Expr(ast.Call(func=call.func, args=args, keywords=call.keywords))
    mod = ast.fix_missing_locations(ast.Module(body=[stmt], type_ignores=[]))
    exec(compile(mod, "<tensor intrinsic>", "exec"), ns)  # noqa: S102 - TVM's own source
    return own

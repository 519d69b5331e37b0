"""float16 CUDA builds put their heavy kernels on tensor cores (ldmatrix + mma.sync in the
PTX nvcc generated), and the layer report names each kernel's rule and FLOPs. No GPU needed:
the PTX is what nvcc wrote while building (TVM_KERNEL_DUMP keeps it)."""

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline

RNG = np.random.default_rng(0)


def _w(name, shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.05).astype(np.float32), name)


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bert_block(path, seq=128, hidden=768, ffn=3072, heads=12):
    """One BERT-base encoder layer's heavy part: QKV and output projections, attention's two
    batched matmuls, and the 768 -> 3072 -> 768 MLP, at the real layer shapes."""
    d = hidden // heads
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q0"]), helper.make_node("Add", ["q0", "bq"], ["q1"]),
        helper.make_node("MatMul", ["x", "wk"], ["k0"]),
        helper.make_node("MatMul", ["x", "wv"], ["v0"]),
        helper.make_node("Reshape", ["q1", "shp"], ["q2"]), helper.make_node("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["k0", "shp"], ["k2"]), helper.make_node("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v0", "shp"], ["v2"]), helper.make_node("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o0"]), helper.make_node("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o1", "shp2"], ["o2"]), helper.make_node("MatMul", ["o2", "wo"], ["o3"]),
        helper.make_node("Add", ["o3", "x"], ["h"]),
        helper.make_node("MatMul", ["h", "w1"], ["f0"]), helper.make_node("Add", ["f0", "b1"], ["f1"]),
        helper.make_node("Relu", ["f1"], ["f2"]), helper.make_node("MatMul", ["f2", "w2"], ["y"]),
    ]
    inits = [_w("wq", (hidden, hidden)), _w("bq", (hidden,)), _w("wk", (hidden, hidden)), _w("wv", (hidden, hidden)),
             _w("wo", (hidden, hidden)), _w("w1", (hidden, ffn)), _w("b1", (ffn,)), _w("w2", (ffn, hidden)),
             numpy_helper.from_array(np.array([1, seq, heads, d], np.int64), "shp"),
             numpy_helper.from_array(np.array([1, seq, hidden], np.int64), "shp2")]
    g = helper.make_graph(nodes, "bert_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, hidden])], inits)
    return _save(g, path)


def resnet_block(path, ch=64, size=56):
    """A ResNet-50 stage-1 bottleneck at its real shapes: 1x1 (256 -> 64), 3x3 (64 -> 64),
    1x1 (64 -> 256), residual add, ReLUs."""
    wide = ch * 4
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "x"], ["a"]), helper.make_node("Relu", ["a"], ["y"]),
    ]
    inits = [_w("w1", (ch, wide, 1, 1)), _w("b1", (ch,)), _w("w2", (ch, ch, 3, 3)), _w("b2", (ch,)),
             _w("w3", (wide, ch, 1, 1)), _w("b3", (wide,))]
    g = helper.make_graph(nodes, "resnet_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, wide, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, wide, size, size])], inits)
    return _save(g, path)


def _ptx_kernels(dump_dir) -> dict[str, str]:
    """kernel name -> its PTX body, from every .ptx nvcc kept."""
    out = {}
    for f in dump_dir.rglob("*.ptx"):
        text = f.read_text()
        for m in re.finditer(r"\.entry\s+(\w+)\s*\(", text):
            end = text.find(".entry", m.end())
            out[m.group(1)] = text[m.start(): end if end != -1 else len(text)]
    return out


def _compile(model, target, tmp_path, monkeypatch):
    dump = tmp_path / "kernels"
    dump.mkdir()
    monkeypatch.setenv("TVM_KERNEL_DUMP", str(dump))
    art = pipeline.compile(model, target, output=tmp_path / "a", precision="fp16")
    report = json.loads((art.path / "layers.json").read_text())
    return art, report, _ptx_kernels(dump)


def _heavy(report, min_flops):
    return [k for k in report["kernels"] if k.get("flops", 0) >= min_flops]


def _check_heavy_on_tensor_cores(report, ptx, min_flops, expect):
    heavy = _heavy(report, min_flops)
    assert len(heavy) >= expect, [(k["kernel"], k.get("flops")) for k in report["kernels"]]
    for k in heavy:
        assert k["schedule"] == "default: TensorCore", (k["kernel"], k["schedule"])
        body = [b for name, b in ptx.items() if name.startswith(k["kernel"])]
        assert body, (k["kernel"], sorted(ptx))
        assert "mma.sync.aligned.m16n8k16" in body[0] and "ldmatrix.sync.aligned" in body[0], k["kernel"]
    # nothing is left unscheduled, and no kernel falls back to one thread per element for a GEMM
    for k in report["kernels"]:
        assert not k["schedule"].startswith("TVM plain"), k


@pytest.mark.parametrize("target", ["cuda-sm90", "jetson-orin", pytest.param("cuda-sm80", marks=pytest.mark.slow)])
def test_bert_block_fp16_runs_on_tensor_cores(tmp_path, monkeypatch, target):
    model = bert_block(tmp_path / "bert.onnx")
    art, report, ptx = _compile(model, target, tmp_path, monkeypatch)
    # QKV/out projections (0.15 GFLOP each), MLP (0.6 GFLOP each), attention (12 x 128x128x64)
    _check_heavy_on_tensor_cores(report, ptx, 2e7, expect=5)
    mlp = [k for k in report["kernels"] if k.get("flops", 0) >= 6e8]
    assert len(mlp) == 2  # 2 * 128 * 768 * 3072, counted before scheduling
    assert art.manifest["tuning"]["kernels"] == len({k["kernel"] for k in report["kernels"]})


@pytest.mark.parametrize("target", ["cuda-sm90", pytest.param("cuda-sm80", marks=pytest.mark.slow),
                                    pytest.param("jetson-orin", marks=pytest.mark.slow)])
def test_resnet_bottleneck_fp16_convs_are_implicit_gemms_on_tensor_cores(tmp_path, monkeypatch, target):
    model = resnet_block(tmp_path / "resnet.onnx")
    art, report, ptx = _compile(model, target, tmp_path, monkeypatch)
    convs = [k for k in report["kernels"] if any(op == "Conv" for op, _ in k["nodes"])]
    assert len(convs) == 3
    assert all("NHWC" in k["layouts"] for k in convs), [k["layouts"] for k in convs]
    _check_heavy_on_tensor_cores(report, ptx, 1e8, expect=3)


def _te_matmul(m, n, k, dtype):
    from tvm import te

    a = te.placeholder((m, k), dtype, "a")
    w = te.placeholder((k, n), dtype, "w")
    r = te.reduce_axis((0, k), "r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r].astype("float32") * w[r, j].astype("float32"), axis=r), "c")
    return te.create_prim_func([a, w, c])


def _target(arch):
    from pipeline.backends.cuda.toolkit import prepare_driver

    prepare_driver()
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch, "max_threads_per_block": 1024,
                              "max_shared_memory_per_block": 49152, "thread_warp_size": 32}, host={"kind": "llvm"})


@pytest.mark.parametrize("shape,dtype,arch,takes", [
    ((128, 3072, 768), "float16", "sm_90", True),
    ((1, 3072, 768), "float16", "sm_90", False),    # batch-1 GEMV: left to dlight's GEMV rules
    ((128, 3072, 768), "float32", "sm_90", False),  # float32 has no tensor-core path here
    ((128, 3072, 768), "float16", "sm_75", False),  # m16n8k16 with ldmatrix needs sm_80
])
def test_tensor_core_rule_takes_only_float16_gemms_on_sm80_plus(shape, dtype, arch, takes):
    from pipeline.backends.cuda.rules import TensorCore, default_schedule

    target = _target(arch)
    func = _te_matmul(*shape, dtype)
    with target:
        sch = TensorCore().apply(func, target, False)
    assert (sch is not None) == takes
    if takes:
        text = sch.mod.script()
        assert "ptx_legacy.ldmatrix(" in text and "ptx_legacy.mma(" in text
    elif arch != "sm_75":  # another rule still schedules it: a GPU kernel is never left without threads
        # (on sm_75 that is dlight's WMMA matmul, whose import of every CUDA intrinsic takes minutes here)
        assert default_schedule(func, target) is not None


def mobilenet_block(path, ch=32, expand=6, size=56):
    """A MobileNetV2 inverted residual at its stage-2 shapes: 1x1 expand, 3x3 depthwise, 1x1 project."""
    wide = ch * expand
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=wide),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], kernel_shape=[1, 1]), helper.make_node("Add", ["c3", "x"], ["y"]),
    ]
    inits = [_w("w1", (wide, ch, 1, 1)), _w("w2", (wide, 1, 3, 3)), _w("w3", (ch, wide, 1, 1))]
    g = helper.make_graph(nodes, "mbv2_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ch, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, ch, size, size])], inits)
    return _save(g, path)


def vit_patch_embed(path):
    """ViT-B/16's patch embedding: a 16x16 stride-16 conv, 3 -> 768 channels, on 224x224."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[16, 16], strides=[16, 16])]
    g = helper.make_graph(nodes, "vit_patch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 768, 14, 14])],
                          [_w("w", (768, 3, 16, 16)), _w("b", (768,))])
    return _save(g, path)


def test_mobilenet_block_pointwise_on_tensor_cores_depthwise_not(tmp_path, monkeypatch):
    art, report, ptx = _compile(mobilenet_block(tmp_path / "mb.onnx"), "cuda-sm90", tmp_path, monkeypatch)
    # the kernels that compute (the layout transposes around them count 0 FLOPs)
    convs = {k["kernel"]: k for k in report["kernels"] if k.get("flops", 0) > 0}
    assert len(convs) == 3
    tc = [k for k in convs.values() if k["schedule"] == "default: TensorCore"]
    assert len(tc) == 2  # the two 1x1 convs; the depthwise one has K = 9: no 16x16x16 fragments
    other = [k for k in convs.values() if k not in tc][0]
    assert other["schedule"].startswith("default: ") and other.get("flops", 0) > 0
    for k in tc:
        assert "mma.sync.aligned.m16n8k16" in next(b for n, b in ptx.items() if n.startswith(k["kernel"]))


def test_vit_patch_embedding_strided_conv_on_tensor_cores(tmp_path, monkeypatch):
    art, report, ptx = _compile(vit_patch_embed(tmp_path / "vit.onnx"), "cuda-sm90", tmp_path, monkeypatch)
    _check_heavy_on_tensor_cores(report, ptx, 1e8, expect=1)  # 2 * 196 * 768 * 768 FLOPs

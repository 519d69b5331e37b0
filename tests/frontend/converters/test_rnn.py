"""LSTM, GRU and RNN (deploy's converters: TVM's ONNX frontend has none), exported from torch:
sequence-first and batch-first, bidirectional, 2 layers, initial states; for x86-64 and, run
under qemu-user, rpi4. LSTM built with onnx.helper in each form against ONNX Runtime; recurrent
ops inside If branches; a torch CRNN. Plus a TVM pass that fails inside a required stage falling
back."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import pipeline
from conftest import needs_module, ort_run


class Seq(torch.nn.Module):
    def __init__(self, cell: str, batch_first: bool, bidirectional: bool, layers: int, with_state: bool = False):
        super().__init__()
        self.rnn = getattr(torch.nn, cell)(16, 24, num_layers=layers, batch_first=batch_first,
                                           bidirectional=bidirectional)
        self.head = torch.nn.Linear(24 * (2 if bidirectional else 1), 5)
        self.with_state = with_state

    def forward(self, x, *state):
        y, _ = self.rnn(x, *state) if state else self.rnn(x)
        return self.head(y)


def export(tmp_path, cell, batch_first, bidirectional, layers, state=False):
    torch.manual_seed(0)
    m = Seq(cell, batch_first, bidirectional, layers).eval()
    x = torch.randn(2, 9, 16) if batch_first else torch.randn(9, 2, 16)
    args, names = (x,), ["x"]
    if state:
        h = torch.randn(layers * (2 if bidirectional else 1), 2, 24)
        args, names = ((x, (h, torch.randn_like(h))) if cell == "LSTM" else (x, h)), ["x", "h0", "c0"][:3 if cell == "LSTM" else 2]
    path = tmp_path / f"{cell}-{batch_first}-{bidirectional}-{layers}.onnx"
    torch.onnx.export(m, args, str(path), input_names=names, output_names=["y"], opset_version=14, dynamo=False)
    assert cell in {n.op_type for n in onnx.load(str(path)).graph.node}
    return path, m, args


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first,bidirectional,layers", [(False, False, 1), (True, True, 2)])
def test_recurrent_torch_exports_match(tmp_path, cell, batch_first, bidirectional, layers):
    path, m, args = export(tmp_path, cell, batch_first, bidirectional, layers)
    art = pipeline.compile(path, "x86-64", output=tmp_path / "art")
    x = args[0].numpy()
    ours = art({"x": x})["y"]
    np.testing.assert_allclose(ours, ort_run(path, {"x": x})["y"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ours, m(*args).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_lstm_with_initial_states(tmp_path):
    path, m, args = export(tmp_path, "LSTM", True, True, 2, state=True)
    art = pipeline.compile(path, "x86-64", output=tmp_path / "art")
    feed = {"x": args[0].numpy(), "h0": args[1][0].numpy(), "c0": args[1][1].numpy()}
    feed = {k: v for k, v in feed.items() if k in {s["name"] for s in art.inputs}}
    np.testing.assert_allclose(art(feed)["y"], ort_run(path, feed)["y"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_recurrent_on_rpi4_under_qemu(tmp_path, cell):
    path, _, args = export(tmp_path, cell, True, True, 2)
    art = pipeline.compile(path, "rpi4", output=tmp_path / "rpi4", check=True)  # the check runs it under qemu
    assert art.manifest["check"]["status"] == "passed", art.manifest["check"]
    x = args[0].numpy()
    r = art.run_runner({"x": x})
    np.testing.assert_allclose(r.outputs["y"], ort_run(path, {"x": x})["y"], atol=1e-5, rtol=1e-4)


def test_sequence_lengths_past_the_input_are_refused_by_name(tmp_path):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 2, 3])
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 20, 3)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 20, 5)).astype(np.float32), "R")
    lens = numpy_helper.from_array(np.array([5, 2], np.int32), "L")
    node = helper.make_node("LSTM", ["X", "W", "R", "", "L"], ["Y"], hidden_size=5, name="lstm0")
    g = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 1, 2, 5])],
                          [w, r, lens])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    with pytest.raises(pipeline.DeployError, match=r"lstm0.*sequence_lens \[5, 2\] outside 0\.\.4"):
        pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")


def test_an_optimization_pass_tvm_fails_on_is_skipped(tmp_path):
    """Two MatMuls sharing a constant left operand: TVM's CombineParallelMatmul raises on them."""
    c = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32), "C")
    nodes = [helper.make_node("MatMul", ["C", "X"], ["Y1"]), helper.make_node("Relu", ["X"], ["R"]),
             helper.make_node("MatMul", ["C", "R"], ["Y2"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 5])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5]) for n in ("Y1", "Y2")], [c])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert {"stage": "pass CombineParallelMatmul"}.items() <= art.manifest["fallbacks"][0].items()
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    ref = ort_run(tmp_path / "m.onnx", {"X": x})
    for k, v in art({"X": x}).items():
        np.testing.assert_allclose(v, ref[k], atol=1e-5)


@pytest.mark.parametrize("direction,clip,peepholes", [("bidirectional", 0.9, True), ("reverse", None, False)])
def test_lstm_is_one_fused_kernel_on_cpus(tmp_path, direction, clip, peepholes):
    """On CPUs an LSTM's whole recurrence is one kernel of the backend's (cpu/recurrence.py), not a
    few kernels per step; clip, peepholes, initial states and all three outputs match ONNX Runtime."""
    d, t, b, i, h = (2 if direction == "bidirectional" else 1), 7, 3, 6, 16
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.5, n)
             for n, s in [("W", (d, 4 * h, i)), ("R", (d, 4 * h, h)), ("B", (d, 8 * h)), ("P", (d, 3 * h))]]
    extra = {"clip": clip} if clip is not None else {}
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "H0", "C0", "P" if peepholes else ""], ["Y", "Yh", "Yc"],
                            hidden_size=h, direction=direction, name="lstm0", **extra)
    fl = TensorProto.FLOAT
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", fl, [t, b, i]),
                                        helper.make_tensor_value_info("H0", fl, [d, b, h]),
                                        helper.make_tensor_value_info("C0", fl, [d, b, h])],
                          [helper.make_tensor_value_info("Y", fl, [t, d, b, h]),
                           helper.make_tensor_value_info("Yh", fl, [d, b, h]),
                           helper.make_tensor_value_info("Yc", fl, [d, b, h])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    feed = {"X": rng.standard_normal((t, b, i)).astype(np.float32) * 2,
            "H0": rng.standard_normal((d, b, h)).astype(np.float32),
            "C0": rng.standard_normal((d, b, h)).astype(np.float32)}
    ref = ort_run(tmp_path / "m.onnx", feed)
    ours = art(feed)
    for k in ("Y", "Yh", "Yc"):
        np.testing.assert_allclose(ours[k], ref[k], atol=2e-6, rtol=1e-5)
    import json

    kernels = json.loads((tmp_path / "a" / "layers.json").read_text())["kernels"]
    fused = [k for k in kernels if k["kernel"].startswith("lstm_recurrence")]
    assert len(fused) == 1 and fused[0]["schedule"] == "deploy kernel", kernels
    assert len(kernels) < 8, kernels  # the unrolled form had several kernels per step


def _recurrent_branch(name, cell, hidden, direction):
    """A branch ``cell(X) -> Squeeze(axis 1)``: only the op's Y output is named."""
    rng = np.random.default_rng(len(name) + hidden)
    g = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.5, f"{name}_{k}")
             for k, s in (("W", (1, g * hidden, 3)), ("R", (1, g * hidden, hidden)), ("B", (1, 2 * g * hidden)))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), f"{name}_axes"))
    nodes = [helper.make_node(cell, ["X", f"{name}_W", f"{name}_R", f"{name}_B"], [f"{name}_Y"], hidden_size=hidden,
                              direction=direction),
             helper.make_node("Squeeze", [f"{name}_Y", f"{name}_axes"], [f"{name}_out"])]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT,
                                                                            [4, 2, hidden])], inits)


@pytest.mark.parametrize("else_cell,else_hidden", [("LSTM", 8), ("GRU", 6), ("RNN", 8)])
def test_recurrent_ops_inside_if_branches_match_ort(tmp_path, else_cell, else_hidden):
    """An If on a bool input whose branches are LSTM -> Squeeze and GRU/RNN -> Squeeze: the
    branches convert as the main graph does (TVM's branch walk handed the LSTM's whole result
    tuple to Squeeze). Same-shaped results become a Where; GRU's hidden 6 keeps the If."""
    fl = TensorProto.FLOAT
    then = _recurrent_branch("then", "LSTM", 8, "forward")
    other = _recurrent_branch("else", else_cell, else_hidden, "reverse")
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="if0")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                        helper.make_tensor_value_info("X", fl, [4, 2, 3])],
                          [helper.make_tensor_value_info("y", fl, [4, 2, None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    for c, hidden in ((True, 8), (False, else_hidden)):
        feed = {"c": np.array(c), "X": x}
        ours, ref = art(feed)["y"], ort_run(tmp_path / "m.onnx", feed)["y"]
        assert ours.shape == ref.shape == (4, 2, hidden)
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-4)


def _lstm(path, layout=0, direction="forward", outputs=("Y", "Y_h", "Y_c"), lens=None, lens_fed=False, states=False,
          peepholes=False, clip=None, acts=None, t=4, b=2, i=3, h=5):
    """A one-node LSTM model; returns its feed. ``acts``: (activations, alphas, betas)."""
    d = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.6, n)
             for n, s in (("W", (d, 4 * h, i)), ("R", (d, 4 * h, h)), ("B", (d, 8 * h)), ("P", (d, 3 * h)))]
    fl = TensorProto.FLOAT
    x_shape, s_shape = ([b, t, i], [b, d, h]) if layout else ([t, b, i], [d, b, h])
    inputs = [helper.make_tensor_value_info("X", fl, x_shape)]
    feed = {"X": rng.standard_normal(x_shape).astype(np.float32) * 2}
    if states:
        inputs += [helper.make_tensor_value_info(n, fl, s_shape) for n in ("H0", "C0")]
        feed.update({n: rng.standard_normal(s_shape).astype(np.float32) for n in ("H0", "C0")})
    if lens is not None and lens_fed:
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [b]))
        feed["L"] = np.array(lens, np.int32)
    elif lens is not None:
        inits.append(numpy_helper.from_array(np.array(lens, np.int32), "L"))
    ins = ["X", "W", "R", "B", "L" if lens is not None else "", "H0" if states else "", "C0" if states else "",
           "P" if peepholes else ""]
    attrs = {"hidden_size": h, "direction": direction, "layout": layout}
    if clip is not None:
        attrs["clip"] = clip
    if acts:
        attrs["activations"] = acts[0]
        attrs.update({k: v for k, v in (("activation_alpha", acts[1]), ("activation_beta", acts[2])) if v})
    names = [o if o in outputs else "" for o in ("Y", "Y_h", "Y_c")]
    y_shape = [b, t, d, h] if layout else [t, d, b, h]
    node = helper.make_node("LSTM", ins, names, name="lstm0", **attrs)
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(o, fl, y_shape if o == "Y" else s_shape)
                                                for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return feed


LSTM_CASES = {  # name: (_lstm's arguments, whether the CPU's fused kernel takes it)
    "forward": (dict(), True),
    "batch-first-bidirectional-states": (dict(layout=1, direction="bidirectional", states=True), True),
    "reverse-Y_c-only": (dict(direction="reverse", outputs=("Y_c",)), True),
    "bidirectional-peepholes-clip-states": (dict(direction="bidirectional", outputs=("Y", "Y_h"), states=True,
                                                 peepholes=True, clip=0.7), True),
    "batch-first-peepholes-clip": (dict(layout=1, peepholes=True, clip=0.5, t=5, b=1), True),
    "sequence-lens-full": (dict(direction="bidirectional", lens=[4, 4]), True),
    "sequence-lens-shorter": (dict(direction="bidirectional", lens=[4, 2, 0], states=True, b=3), False),
    "sequence-lens-fed-batch-first": (dict(layout=1, direction="reverse", lens=[3, 1], lens_fed=True, b=2), False),
    "activations-alpha-beta": (dict(direction="bidirectional", acts=(
        ["HardSigmoid", "Elu", "Softsign", "LeakyRelu", "Tanh", "ScaledTanh"], [0.3, 0.8, 0.05, 0.9], [0.4, 1.2])),
        False),
    "activations-batch-first-defaults": (dict(layout=1, acts=(["HardSigmoid", "Softplus", "Relu"], [], [])), False),
}


@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_lstm_forms_match_ort(tmp_path, case):
    """LSTM per form against ONNX Runtime: layout 0 and 1, directions, Y/Y_h/Y_c, sequence_lens
    (full, shorter, fed at run time), initial states, peepholes, clip, activations with their
    alphas/betas (consumed in order by the activations that take one, as ORT does). ORT has no
    layout=1 (batch-first) kernel: those are checked against ORT on the same model in layout 0."""
    kw, fused = LSTM_CASES[case]
    feed = _lstm(tmp_path / "m.onnx", **kw)
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a", check=False)
    if kw.get("layout"):  # ORT's reference: the layout-0 model, inputs and outputs transposed
        _lstm(tmp_path / "m0.onnx", **{**kw, "layout": 0})
        ref = ort_run(tmp_path / "m0.onnx", {k: v if k == "L" else np.ascontiguousarray(np.swapaxes(v, 0, 1))
                                              for k, v in feed.items()})
        ref = {k: np.transpose(v, (2, 0, 1, 3)) if k == "Y" else np.swapaxes(v, 0, 1) for k, v in ref.items()}
    else:
        ref = ort_run(tmp_path / "m.onnx", feed)
    ours = art(feed)
    assert set(ours) == set(ref) == set(kw.get("outputs", ("Y", "Y_h", "Y_c")))
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        np.testing.assert_allclose(ours[k], ref[k], atol=1e-5, rtol=1e-4, err_msg=k)
    import json

    kernels = json.loads((tmp_path / "a" / "layers.json").read_text())["kernels"]
    assert any(k["kernel"].startswith("lstm_recurrence") for k in kernels) == fused


@pytest.mark.parametrize("dynamo", [False, True])
def test_crnn_from_torch_matches_ort(tmp_path, dynamo):
    """A torch CRNN exported with a dynamic batch and width, compiled for one shape: [width, batch,
    classes] out, the same numbers as ONNX Runtime and torch (batch 2, so that the batch and time
    axes cannot be confused)."""
    if dynamo:
        needs_module("onnxscript")  # the dynamo exporter needs it (a test extra)
    torch.manual_seed(0)
    from zoo.torch_models import CRNN

    m = CRNN().eval()
    x = torch.randn(2, 1, 8, 20)
    path = tmp_path / "crnn.onnx"
    kw = ({"dynamic_shapes": {"x": {0: torch.export.Dim("batch", max=32), 3: 4 * torch.export.Dim("w", max=256)}}}
          if dynamo else {"dynamic_axes": {"x": {0: "batch", 3: "width"}, "y": {0: "steps", 1: "batch"}}})
    torch.onnx.export(m, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, **kw)
    assert "LSTM" in {n.op_type for n in onnx.load(str(path)).graph.node}
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", input_shapes={"x": [2, 1, 8, 20]})
    assert art.manifest["check"]["status"] == "passed"
    ours, ref = art({"x": x.numpy()})["y"], ort_run(path, {"x": x.numpy()})["y"]
    assert ours.shape == ref.shape == (10, 2, 11)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ours, m(x).detach().numpy(), atol=1e-5, rtol=1e-4)


# ONNX Runtime's quantize_dynamic: com.microsoft.DynamicQuantizeLSTM for each LSTM layer (int8
# W and R, transposed: [D, input, 4H]), DynamicQuantizeLinear + MatMulInteger for the Linear head;
# ORT's graph optimizer fuses the latter into com.microsoft.DynamicQuantizeMatMul.

class _LstmHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 32, num_layers=2)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


@pytest.fixture(scope="module")
def lstm_head_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dqlstm") / "lstm_head.onnx"
    torch.onnx.export(_LstmHead().eval(), (torch.randn(10, 1, 16),), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False)
    return path


def _quantize_dynamic(src, dst, weight_type="QInt8", per_channel=False, ops=None, fuse=False, reduce_range=False):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, weight_type), per_channel=per_channel,
                     op_types_to_quantize=ops, reduce_range=reduce_range)
    if fuse:  # ORT's optimizer: DynamicQuantizeLinear + MatMulInteger + ... -> DynamicQuantizeMatMul
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    return dst


def _ops(path):
    return {(n.domain or "", n.op_type) for n in onnx.load(str(path)).graph.node}


def _dequantized_lstms(path, out):
    """The model with each DynamicQuantizeLSTM replaced by an ONNX LSTM over its weights
    dequantized ((q - zero_point) * scale, per direction or per column) and transposed to
    [D, 4H, K]: what deploy computes, for ONNX Runtime to run in float32."""
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type != "DynamicQuantizeLSTM":
            nodes.append(n)
            continue
        ins = list(n.input)
        for k, (q, s, z) in enumerate([(1, 8, 9), (2, 10, 11)]):
            w, scale, zp = inits[ins[q]], inits[ins[s]], inits[ins[z]]
            shape = (w.shape[0], 1, -1) if scale.ndim == 2 else (-1, 1, 1)
            f = (w.astype(np.float32) - zp.reshape(shape).astype(np.float32)) * scale.reshape(shape)
            name = f"{ins[q]}_float"
            m.graph.initializer.append(numpy_helper.from_array(f.transpose(0, 2, 1).copy(), name))
            ins[q] = name
        nodes.append(helper.make_node("LSTM", ins[:8], list(n.output), name=n.name, **{
            a.name: helper.get_attribute_value(a) for a in n.attribute}))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("per_channel,reduce_range", [(False, False), (True, True)])
def test_dynamic_quantize_lstm_is_its_dequantized_lstm(tmp_path, lstm_head_onnx, per_channel, reduce_range):
    """A 2-layer LSTM quantized by quantize_dynamic (LSTM only; the head stays float): deploy
    inspect lists nothing unsupported, the compile's check passes against ONNX Runtime on the
    quantized model, and the output is the dequantized-weight LSTM's to fp32 rounding (1e-5).

    Against ORT on the quantized model the tolerance is int8's (max abs <= 1e-3 + 0.1 max|ref|,
    cosine >= 0.98), because ORT computes in integers: it quantizes X and each step's H to uint8
    at run time (per tensor), which deploy does not, and its uint8 x int8 kernel on an AVX2 CPU
    without VNNI (as here) saturates 16-bit pair sums of full-range int8 weights. Measured on
    outputs up to 0.2: with full-range weights ORT is 0.006-0.015 off deploy and as far off the
    unquantized float model, which deploy stays within 2.5e-4 of; with reduce_range (7-bit
    weights, no saturation) ORT is within 3.4e-4 of deploy, the activation rounding alone. So the
    test asserts the 1e-5 match with the dequantized LSTM, deploy as close to the float model as
    ORT's int8 (the check's own criterion: within 1.5x), and with reduce_range a 1e-3 match with ORT."""
    from pipeline.frontend.inspect import model_info

    q = _quantize_dynamic(lstm_head_onnx, tmp_path / "q.onnx", per_channel=per_channel, ops=["LSTM"],
                          reduce_range=reduce_range)
    assert ("com.microsoft", "DynamicQuantizeLSTM") in _ops(q) and ("", "LSTM") not in _ops(q)
    assert model_info(onnx.load(str(q))).unsupported == {}
    art = pipeline.compile(q, "x86-64", output=tmp_path / "art")
    m = art.manifest
    assert m["check"]["status"] == "passed", m["check"]
    assert m["precision"] == {"compute": "fp32", "check": "int8"}
    (note,) = m["notes"]
    assert note["op"] == "com.microsoft.DynamicQuantizeLSTM" and len(note["nodes"]) == 2
    assert note["computes"].startswith("float32: W and R dequantized")
    x = np.random.RandomState(1).randn(10, 1, 16).astype(np.float32)
    ours = art({"x": x})["y"]
    np.testing.assert_allclose(ours, ort_run(_dequantized_lstms(q, tmp_path / "f.onnx"), {"x": x})["y"],
                               atol=1e-5, rtol=1e-4)
    ref, f32 = ort_run(q, {"x": x})["y"], ort_run(lstm_head_onnx, {"x": x})["y"]
    assert np.abs(ours - ref).max() <= 0.1 * np.abs(ref).max()
    assert np.abs(ours - f32).max() <= 1.5 * np.abs(ref - f32).max() + 1e-4  # as close to float as ORT's int8
    if reduce_range:
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("weight_type,per_channel,fuse", [("QInt8", False, False), ("QUInt8", True, True)])
def test_quantize_dynamic_lstm_with_linear_head(tmp_path, lstm_head_onnx, weight_type, per_channel, fuse):
    """quantize_dynamic's whole model: DynamicQuantizeLSTM x2 and the head as DynamicQuantizeLinear
    + MatMulInteger, or (ORT-optimized) com.microsoft.DynamicQuantizeMatMul, which deploy expands
    back into that form. An int8 head weight computes in int8; a uint8 one (zero point not 0),
    which deploy's int8 kernels do not take, in float32. The check passes against ORT at int8's
    tolerance (see above: ORT quantizes the LSTMs' activations too)."""
    from pipeline.frontend.inspect import model_info

    q = _quantize_dynamic(lstm_head_onnx, tmp_path / "q.onnx", weight_type, per_channel, fuse=fuse)
    ops = _ops(q)
    assert ("com.microsoft", "DynamicQuantizeLSTM") in ops
    assert (("com.microsoft", "DynamicQuantizeMatMul") in ops) == fuse
    assert model_info(onnx.load(str(q))).unsupported == {}
    art = pipeline.compile(q, "x86-64", output=tmp_path / "art")
    m = art.manifest
    assert m["check"]["status"] == "passed", m["check"]
    notes = {n["op"]: n for n in m["notes"]}
    assert notes["com.microsoft.DynamicQuantizeLSTM"]["computes"].startswith("float32")
    if fuse:
        assert notes["com.microsoft.DynamicQuantizeMatMul"]["computes"].startswith(
            "int8" if weight_type == "QInt8" else "float32: B dequantized")
    x = np.random.RandomState(1).randn(10, 1, 16).astype(np.float32)
    ours, ref = art({"x": x})["y"], ort_run(q, {"x": x})["y"]
    assert np.abs(ours - ref).max() <= 0.1 * np.abs(ref).max()


def test_dynamic_quantize_lstm_weights_fed_at_run_time_are_refused(tmp_path):
    """W must be an initializer (it is dequantized at compile time): a DeployError naming it."""
    d, i, h = 1, 4, 3
    rng = np.random.RandomState(0)
    inits = [numpy_helper.from_array(rng.randint(-100, 100, (d, h, 4 * h)).astype(np.int8), "R"),
             numpy_helper.from_array(np.full((d,), 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros((d,), np.int8), "wz"),
             numpy_helper.from_array(np.full((d,), 0.01, np.float32), "rs"),
             numpy_helper.from_array(np.zeros((d,), np.int8), "rz")]
    node = helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R", "", "", "", "", "", "ws", "wz", "rs", "rz"],
                            ["y"], name="qlstm", domain="com.microsoft", hidden_size=h)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, i]),
                                        helper.make_tensor_value_info("W", TensorProto.INT8, [d, i, 4 * h])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 1, h])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(pipeline.DeployError, match=r"DynamicQuantizeLSTM's W must be a constant"):
        pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "art")


@pytest.mark.parametrize("weight_type,per_channel", [("QInt8", True), ("QUInt8", False)])
def test_dynamic_quantize_matmul_computes_as_ort(tmp_path, weight_type, per_channel):
    """com.microsoft.DynamicQuantizeMatMul alone (an MLP quantized by quantize_dynamic, then fused
    by ORT's optimizer), batch 4: int8 weights (zero point 0, per column) compute in int8 (the
    int32 matmuls are in the IR), uint8 ones in float32 over the dequantized weight. Either way the
    activation is quantized at run time exactly as ORT does, so the output is ORT's to fp32
    rounding of the scales (1e-5 of the output's range). The int8 weights are quantized with
    reduce_range: ORT's uint8 x int8 kernel on AVX2 without VNNI saturates with full-range int8
    weights (here 0.5 off on outputs of 1.2, for MatMulInteger as for DynamicQuantizeMatMul),
    where deploy computes ONNX's exact integer result."""
    torch.manual_seed(0)
    src = tmp_path / "mlp.onnx"
    mlp = torch.nn.Sequential(torch.nn.Linear(24, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10)).eval()
    torch.onnx.export(mlp, (torch.randn(4, 24),), str(src), input_names=["x"], output_names=["y"], dynamo=False)
    q = _quantize_dynamic(src, tmp_path / "q.onnx", weight_type, per_channel, fuse=True,
                          reduce_range=weight_type == "QInt8")
    assert _ops(q) <= {("com.microsoft", "DynamicQuantizeMatMul"), ("", "Relu")}
    art = pipeline.compile(q, "x86-64", output=tmp_path / "art", dump_ir=tmp_path / "ir")
    assert art.manifest["check"]["status"] == "passed", art.manifest["check"]
    (note,) = art.manifest["notes"]
    assert note["op"] == "com.microsoft.DynamicQuantizeMatMul" and len(note["nodes"]) == 2
    if weight_type == "QInt8":
        assert note["computes"].startswith("int8") and art.manifest["precision"]["compute"] == "int8"
        assert next((tmp_path / "ir").glob("*int8.py")).read_text().count('out_dtype="int32"') >= 2
    else:
        assert note["computes"].startswith("float32: B dequantized at compile time")
    x = np.random.RandomState(1).randn(4, 24).astype(np.float32)
    ours, ref = art({"x": x})["y"], ort_run(q, {"x": x})["y"]
    np.testing.assert_allclose(ours, ref, atol=1e-5 * np.abs(ref).max(), rtol=0)

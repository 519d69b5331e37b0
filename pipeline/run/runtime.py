"""Loading and running an artifact on this machine.

Before the library is loaded, its sha256 is checked against the manifest, its architecture
against this host's, and the CPU features its code needs against what this CPU has: code for
a missing feature would die with SIGILL and no message, so it is refused with one instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import log
from ..backends import for_family, prepare_drivers
from ..host import host_arch, missing_features
from ..errors import DeployError, last_line
from ..files import sha256_file
from ..frontend.dims import Dim, bind_shape, default_sizes, pick_function, resolve
from ..manifest import read_manifest


def np_dtype(name: str) -> np.dtype:
    """numpy's dtype of a manifest dtype name (ml_dtypes' bfloat16, float8_e4m3fn, int4, ... too)."""
    import ml_dtypes  # noqa: F401 - registers its types with numpy

    return np.dtype(name)


def to_storage(specs: list[dict], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Arrays as the library takes them: a narrow type (frontend/narrow.py) as its bits."""
    return [np.ascontiguousarray(a).view(s["storage"]) if s.get("storage") else a for s, a in zip(specs, arrays)]


def from_storage(specs: list[dict], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The library's outputs in the model's types (bits of a narrow type viewed as it)."""
    return [np.asarray(a).view(np_dtype(s["dtype"])) if s.get("storage") else a for s, a in zip(specs, arrays)]


def random_inputs(specs: list[dict], seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs; a symbolic dim takes its size from ``dims`` (name -> size)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        shape = tuple(bind_shape(s["shape"], dims or {}))
        if any(not isinstance(d, int) for d in shape):
            raise DeployError(f"input '{s['name']}' has the dynamic shape {s['shape']}: random inputs need a size "
                              "for each dim", hint="give the sizes (--shapes DIM=N), or pass inputs")
        dtype = np_dtype(s["dtype"])
        if "only" in s:  # the one value the artifact accepts (frontend/training.py)
            out[s["name"]] = np.full(shape, s["only"], dtype=dtype)
        elif dtype.kind == "f" or dtype.name.startswith(("float", "bfloat")):  # ml_dtypes' floats too
            out[s["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[s["name"]] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[s["name"]] = rng.integers(0, 10, shape).astype(dtype)
    return out


def _spec_text(s: dict) -> str:
    return f"{s['name']} {s['dtype']}[{', '.join(str(d) for d in s['shape'])}]"


def check_inputs(specs: list[dict], inputs: dict[str, np.ndarray], dims: dict | None = None,
                 unused: list[dict] = ()) -> list[np.ndarray]:
    """Inputs in the model's order, or one error listing every mismatch. A symbolic dim (a name
    in a spec's shape) takes any size in its range in ``dims`` (name -> frontend.dims.Dim), the
    same size in every input that has it. Inputs named in ``unused`` (the model's, which nothing
    uses) are taken and ignored."""
    dims = dims or {}
    names = [s["name"] for s in specs] + [s["name"] for s in unused]
    problems = [f"unknown input '{k}'" for k in inputs if k not in names]
    arrays = []
    for s in specs:
        a = inputs.get(s["name"])
        if a is None:
            problems.append(f"missing input '{s['name']}' ({s['dtype']}{s['shape']})")
            continue
        a = np.asarray(a)
        if len(a.shape) != len(s["shape"]) or any(isinstance(d, int) and d != n for d, n in zip(s["shape"], a.shape)):
            problems.append(f"input '{s['name']}' has shape {list(a.shape)}, the artifact expects {s['shape']}")
        if a.dtype != np_dtype(s["dtype"]):
            problems.append(f"input '{s['name']}' has dtype {a.dtype}, the artifact expects {s['dtype']}")
        arrays.append(a)
    if not problems and any(isinstance(d, str) for s in specs for d in s["shape"]):
        problems += resolve(specs, arrays, dims)[1]
    if problems:
        ranges = "; dims: " + ", ".join(str(d) for d in dims.values()) if dims else ""
        raise DeployError("bad inputs: " + "; ".join(problems),
                          hint="inputs: " + ", ".join(_spec_text(s) for s in specs) + ranges)
    return arrays


def inputs_for(specs: list[dict], inputs: dict[str, np.ndarray] | None = None,
               dims: dict | None = None, unused: list[dict] = ()) -> dict[str, np.ndarray]:
    """``inputs`` checked against the specs and in their order, or seeded random ones (symbolic
    dims at their default sizes) if None."""
    if inputs is None:
        return random_inputs(specs, dims=default_sizes(dims or {}))
    return dict(zip([s["name"] for s in specs], check_inputs(specs, inputs, dims, unused)))


NPY_HINT = "save one numeric array with numpy.save(path, array)"
NPZ_HINT = "save the arrays with numpy.savez(path, **{input_name: array})"


def _unreadable(path, what: str, e: Exception, hint: str) -> DeployError:
    """What is wrong with an array file numpy could not load, as one message."""
    p = Path(path)
    text = str(e)
    if isinstance(e, FileNotFoundError):
        why = "the file does not exist"
    elif isinstance(e, IsADirectoryError):
        why = "it is a directory"
    elif p.is_file() and p.stat().st_size == 0:
        why = "the file is empty"
    elif "Object arrays" in text:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        why = "it holds Python objects (an object array, stored pickled); deploy reads numeric arrays only"
        hint = "convert it to a numeric array first, e.g. numpy.asarray(x, dtype=numpy.float32), and save that"
    elif "pickled" in text:  # numpy tries pickle on what is neither .npy nor .npz
        why = "it is not an .npy or .npz file made by numpy"
    elif type(e).__name__ == "BadZipFile":
        why = "it is not a complete .npz archive"
    else:
        why = last_line(e)
    return DeployError(f"cannot use {path} as {what}: {why}", hint=hint)


def read_npy(path, what: str = "an input") -> np.ndarray:
    """The one array of an .npy file; a DeployError that says what is wrong with the file otherwise
    (``what`` names what it was given as)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure to load is a problem with the user's file
        raise _unreadable(path, what, e, NPY_HINT) from None
    if not isinstance(data, np.ndarray):  # an .npz archive
        names = list(data.files)
        data.close()
        raise DeployError(f"cannot use {path} as {what}: it is an .npz archive ({len(names)} array(s): "
                          f"{', '.join(names[:8])}), not one .npy array",
                          hint=NPY_HINT + " (or take one array out: numpy.load(path)[name])")
    return data


def read_npz(path, what: str = "inputs") -> dict[str, np.ndarray]:
    """Every array of an .npz file, by name; a DeployError that says what is wrong with the file
    otherwise (``what`` names what it was given as)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            raise DeployError(f"cannot use {path} as {what}: it is an .npy file (one array, without a name), "
                              "not an .npz archive keyed by input name", hint=NPZ_HINT)
        with data as z:
            return {k: z[k] for k in z.files}
    except DeployError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to load is a problem with the user's file
        raise _unreadable(path, what, e, NPZ_HINT) from None


class Artifact:
    """A compiled artifact directory; call it with numpy arrays to run it here."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._vm = None
        self._dev = None
        self._staging: dict = {}  # (input, shape, dtype) -> (aligned array, TVM tensor over it): run() on a CPU

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, target={self.target!r})"

    @property
    def target(self) -> str:
        return self.manifest["target"]["preset"]

    @property
    def library(self) -> Path:
        return self.path / self.manifest["library"]["file"]

    @property
    def backend(self):
        """The Backend of the artifact's target family."""
        return for_family(self.manifest["target"]["family"])

    @property
    def device(self) -> dict | None:
        """The runner and TVM runtime packed into the artifact (ARM targets), or None."""
        return self.manifest.get("device")

    @property
    def emulated(self) -> bool:
        """True when this machine runs the artifact through its runner under qemu-user."""
        return self.device is not None and self.manifest["target"]["arch"] != host_arch()

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["model"]["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["model"]["outputs"]

    @property
    def unused_inputs(self) -> list[dict]:
        """The model's inputs that nothing uses: taken and ignored (as ONNX Runtime needs them fed)."""
        return self.manifest["model"].get("unused_inputs", [])

    @property
    def dims(self) -> dict[str, Dim]:
        """The dynamic dims (name -> range), empty for a static artifact."""
        return {n: Dim.from_dict(n, d) for n, d in self.manifest.get("dims", {}).items()}

    @property
    def functions(self) -> list[dict]:
        """The functions compiled for optimized sizes: {"name": "main_S128", "dims": {"S": 128}}."""
        return self.manifest.get("functions", [])

    def random_inputs(self, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        return random_inputs(self.inputs, seed, sizes if sizes is not None else default_sizes(self.dims))

    def function_for(self, arrays: list) -> str:
        """The VM function that runs inputs of these shapes: a specialization, else ``main``."""
        if not self.functions:
            return "main"
        return pick_function(self.functions, resolve(self.inputs, arrays, self.dims)[0])

    def check_integrity(self) -> None:
        lib = self.library
        if not lib.is_file():
            raise DeployError(f"{lib} is missing", hint="recompile the artifact")
        if sha256_file(lib) != self.manifest["library"]["sha256"]:
            raise DeployError(f"{lib} does not match the sha256 in its manifest: the artifact was modified",
                              hint="recompile it, or restore the original files")
        if self.device is not None:
            self.backend.check_device_files(self.path, self.device)

    def check_host(self) -> None:
        """Refuse to load an artifact this machine cannot run, saying why."""
        t = self.manifest["target"]
        arch = host_arch()
        if t["arch"] != arch:
            if self.device is None and t["cross_compiler"]:
                raise DeployError(
                    f"artifact {self.path} was built for {t['arch']} (target '{t['preset']}'); this machine is {arch}, "
                    f"and the artifact holds no runner to emulate it with (no TVM runtime for {t['arch']})",
                    hint="copy model.so to a board with TVM's runtime (see README.md, 'Edge boards')",
                )
            raise DeployError(
                f"artifact {self.path} was built for {t['arch']} (target '{t['preset']}'); this machine is {arch}",
                hint="run it on a matching board (see `deploy package`), or build for this host with --target x86-64",
            )
        missing = missing_features(t.get("cpu_features", []))
        if missing:
            raise DeployError(
                f"this CPU lacks features the artifact's code uses: {', '.join(missing)} "
                f"(target '{t['preset']}', mcpu {t['tvm_target'].get('mcpu') or t['tvm_target'].get('host', {}).get('mcpu')})",
                hint="recompile with --target x86-64 (this host) or a preset this CPU supports, e.g. x86-64-v3",
            )

    def why_not_here(self) -> DeployError | None:
        """Why this machine cannot run the artifact (another ISA with no emulator, a CPU lacking a
        feature its code uses, a GPU it does not have), with what to do about it; None when it can."""
        t = self.manifest["target"]
        try:
            if self.emulated:
                self.backend.runner_launcher(self.device)
                return None
            self.check_host()
        except DeployError as e:
            return e
        family = self.backend
        if not family.runs_here(t):
            try:
                family.device(self.path)  # says what is missing (a GPU) where it can
            except DeployError as e:
                return e
            return DeployError(f"a {t['family']} artifact for {t['preset']} cannot run on this machine",
                               hint="run it on a machine of its target (`deploy package` bundles it)")
        return None

    def cannot_run_here(self) -> str | None:
        """``why_not_here``'s message, or None."""
        e = self.why_not_here()
        return e.message if e else None

    def load(self) -> "Artifact":
        if self._vm is not None:
            return self
        self.check_integrity()
        self.check_host()
        prepare_drivers()
        import tvm
        from tvm import relax

        dev = self.backend.device(self.path)
        try:
            with log.tvm_quiet():
                lib = tvm.runtime.load_module(_dlopen_path(self.library, self.manifest["library"]["sha256"]))
                self._vm = relax.VirtualMachine(lib, dev)
        except Exception as e:
            raise DeployError(f"cannot load {self.library}: {str(e).strip().splitlines()[-1][:300]}",
                              hint="recompile the artifact with this version of deploy") from e
        self._dev = dev
        return self

    def run(self, inputs: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        inputs = self.random_inputs() if inputs is None else inputs
        if self.emulated:
            return self.run_runner(inputs).outputs
        try:
            fn, args = self._device_args(inputs, staged=True)  # loads the library first
            flat = from_storage(self.outputs, flatten_outputs(self._vm[fn](*args)))
        except DeployError:
            raise
        except AssertionError as e:  # the model's own run-time check (frontend/training.py): its message says it all
            raise DeployError(f"running {self.path} stopped: {last_line(e)[:400]}",
                              hint="feed the value the message names") from e
        except Exception as e:  # noqa: BLE001 - TVM's runtime: one message, not its trace
            raise DeployError(f"running {self.path} failed in TVM's runtime: {last_line(e)[:300]}",
                              hint="check the inputs against the manifest; run with -v, and report the model "
                                   "if they match") from e
        return {o["name"]: r for o, r in zip(self.outputs, flat)}

    __call__ = run

    def run_runner(self, inputs: dict[str, np.ndarray] | None = None, repeat: int = 1, warmup: int = 0,
                   threads: int | None = None):
        """Run through the artifact's C++ runner (under qemu-user for another architecture)."""
        if self.device is None:
            raise DeployError(f"artifact {self.path} holds no runner",
                              hint="recompile it with a cross target, or with runner=True")
        self.check_integrity()
        if inputs is not None:
            arrays = to_storage(self.inputs, check_inputs(self.inputs, inputs, self.dims, self.unused_inputs))
            inputs = dict(zip([s["name"] for s in self.inputs], arrays))
        res = self.backend.run_runner(self.path, self.device, self.outputs, inputs, repeat=repeat, warmup=warmup,
                                      threads=threads)
        if any(o.get("storage") for o in self.outputs):
            res.outputs = dict(zip(res.outputs, from_storage(self.outputs, list(res.outputs.values()))))
        return res

    def _device_args(self, inputs: dict[str, np.ndarray], staged: bool = False) -> tuple[str, list]:
        """The function for these inputs' shapes, and the inputs, checked against the manifest
        and copied to the device, in its order. ``staged`` (one call, on a CPU): each is copied into
        a buffer kept for that input, which the kernels read in place, not a new device tensor
        per call (``tvm.runtime.tensor``'s Python path cost a tiny model 4x its VM time)."""
        import tvm

        self.load()
        arrays = check_inputs(self.inputs, inputs, self.dims, self.unused_inputs)
        stored = to_storage(self.inputs, arrays)
        if staged and self._dev.dlpack_device_type() == 1:  # kDLCPU
            return self.function_for(arrays), [self._staged(i, a) for i, a in enumerate(stored)]
        return self.function_for(arrays), [tvm.runtime.tensor(a, self._dev) for a in stored]

    def _staged(self, i: int, a: np.ndarray):
        """Input ``i``'s staging buffer (64-byte aligned, as TVM's kernels require; made once per
        shape and dtype) holding a copy of ``a``, as a TVM tensor sharing its memory."""
        import tvm

        if a.size == 0:  # an empty view has strides TVM does not take as compact: a device copy
            return tvm.runtime.tensor(a, self._dev)
        key = (i, a.shape, a.dtype.str)
        st = self._staging.get(key)
        if st is None:
            try:
                buf = aligned_empty(a.shape, a.dtype)
                st = (buf, tvm.runtime.from_dlpack(buf))
            except Exception:  # noqa: BLE001 - a dtype DLPack cannot carry: a device copy
                return tvm.runtime.tensor(a, self._dev)
            if len(self._staging) >= 64:  # inputs of ever new shapes: keep the memory bounded
                self._staging.clear()
            self._staging[key] = st
        np.copyto(st[0], a)
        return st[1]

    def bind(self, inputs: dict[str, np.ndarray]):
        """A call of the model on these inputs, copied to the device once (for timing one inference)."""
        name, args = self._device_args(inputs)
        fn = self._vm[name]
        return lambda: fn(*args)

    def set_instrument(self, fn) -> None:
        """Call ``fn(func, symbol, before, ret, *args)`` around every call the VM makes (None: stop)."""
        self.load()
        self._vm.set_instrument(fn)

    def time(self, inputs: dict[str, np.ndarray], number: int, repeat: int) -> list[float]:
        """Seconds per run, ``repeat`` samples each averaging ``number`` runs."""
        name, args = self._device_args(inputs)
        self._vm[name](*args)  # warm up
        timer = self._vm.time_evaluator(name, self._dev, number=number, repeat=repeat)
        return list(timer(*args).results)


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + n].view(dtype).reshape(shape)


def _host_copy(t) -> np.ndarray:
    """A numpy copy of a TVM tensor: through DLPack on a CPU (``Tensor.numpy``'s Python path cost
    more than a tiny model's kernels), else ``numpy()``."""
    try:
        if t.device.dlpack_device_type() == 1:
            return np.from_dlpack(t).copy()
    except Exception:  # noqa: BLE001 - a dtype numpy's DLPack import lacks (bfloat16, ...)
        pass
    return t.numpy()


def flatten_outputs(result) -> list[np.ndarray]:
    import tvm

    if hasattr(result, "numpy"):
        return [_host_copy(result)]
    if isinstance(result, tvm.runtime.ShapeTuple):  # a Shape output: the VM returns the shape itself
        return [np.array(list(result), dtype=np.int64)]
    if isinstance(result, (int, float, bool, np.generic)):
        return [np.asarray(result)]
    out = []
    for r in result:
        out.extend(flatten_outputs(r))
    return out


_loaded: dict[str, str] = {}  # library path -> sha256 of the build loaded from it in this process


def _dlopen_path(lib: Path, sha256: str) -> str:
    """A path that loads this build of ``lib``.

    dlopen hands back the library already loaded from the same path, so a library rebuilt at
    that path (compile --force, deploy build) would run the old code in this process. TVM
    resolves symbolic links, so the rebuilt file is loaded under a fresh name: a hard link where
    the file system allows, else a copy.
    """
    path = str(Path(lib).resolve())
    if _loaded.setdefault(path, sha256) == sha256:
        return path
    fresh = Path(tempfile.mkdtemp(prefix="deploy-lib-")) / f"{sha256[:16]}-{Path(lib).name}"
    try:
        os.link(path, fresh)
    except OSError:
        shutil.copy2(path, fresh)
    return str(fresh)


def load(path: str | Path) -> Artifact:
    """Open an artifact and load its library, after the integrity and host checks."""
    return Artifact(path).load()

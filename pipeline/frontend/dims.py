"""Dynamic dimensions: a named input dim that takes any size in a range (``--dim S=1..512@128,256``).

A dim is kept symbolic through the whole compile (TVM's Relax carries it as a ``tir.Var``), so one
artifact accepts every size in range. The sizes after ``@`` are the ones that matter: each
combination of them gets a copy of the model compiled with those sizes bound (static kernels,
tunable like any static model), and the runtime calls that copy when the inputs have those sizes.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from ..errors import DeployError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a dim's name
_HINT = "write it as NAME=MIN..MAX, optionally with the sizes to specialize for: S=1..512@128,256"


@dataclass
class Dim:
    name: str
    min: int
    max: int
    opt: list[int] = field(default_factory=list)  # sizes that get kernels of their own

    def to_dict(self) -> dict:
        return {"min": self.min, "max": self.max, "opt": list(self.opt)}

    def __str__(self) -> str:
        return f"{self.name}={self.min}..{self.max}" + (f"@{','.join(map(str, self.opt))}" if self.opt else "")

    def contains(self, n: int) -> bool:
        return self.min <= n <= self.max

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "Dim":
        return cls(name, int(d["min"]), int(d["max"]), [int(x) for x in d.get("opt", [])])


def parse_dim(text: str) -> Dim:
    """'S=1..512@128,256' -> Dim('S', 1, 512, [128, 256]); 'B=8' is a range of one size."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not NAME.match(name):
        raise DeployError(f"bad --dim '{text}': the dim needs a name", hint=_HINT)
    rng, _, opt = rest.partition("@")
    try:
        lo, dots, hi = rng.partition("..")
        lo_i = int(lo)
        hi_i = int(hi) if dots else lo_i
        opts = [int(x) for x in opt.split(",") if x.strip()] if opt else []
    except ValueError:
        raise DeployError(f"bad --dim '{text}'", hint=_HINT) from None
    if lo_i < 1 or hi_i < lo_i:
        raise DeployError(f"bad --dim '{text}': the range must be 1 <= MIN <= MAX", hint=_HINT)
    outside = [o for o in opts if not lo_i <= o <= hi_i]
    if outside:
        raise DeployError(f"bad --dim '{text}': optimized size(s) {outside} are outside {lo_i}..{hi_i}", hint=_HINT)
    return Dim(name, lo_i, hi_i, sorted(set(opts)))


def parse_dims(texts) -> dict[str, Dim]:
    """Dims from ``--dim`` texts, Dims, or a dict: {"S": "1..512@128"} or {"S": Dim(...)}."""
    if isinstance(texts, dict):
        texts = [v if isinstance(v, Dim) else f"{k}={v}" for k, v in texts.items()]
    dims: dict[str, Dim] = {}
    for t in texts or []:
        d = parse_dim(t) if isinstance(t, str) else t
        if d.name in dims:
            raise DeployError(f"--dim {d.name} is given twice", hint="give each dim once")
        dims[d.name] = d
    return dims


def specializations(dims: dict[str, Dim]) -> list[dict[str, int]]:
    """Every combination of the optimized sizes (dims without any stay symbolic in each)."""
    with_opt = [d for d in dims.values() if d.opt]
    if not with_opt:
        return []
    return [dict(zip([d.name for d in with_opt], combo)) for combo in itertools.product(*[d.opt for d in with_opt])]


def function_name(binding: dict[str, int]) -> str:
    """The VM function compiled for one specialization: main_B1_S128."""
    return "main_" + "_".join(f"{k}{v}" for k, v in sorted(binding.items()))


def bind_shape(shape: list, values: dict[str, int]) -> list:
    return [values.get(d, d) if isinstance(d, str) else d for d in shape]


def resolve(specs: list[dict], arrays: list, dims: dict[str, Dim]) -> tuple[dict[str, int], list[str]]:
    """The value of each dim in these inputs (the arrays' shapes, in the specs' order), and the
    problems: a dim that two inputs give different sizes, or a size outside its range."""
    values: dict[str, int] = {}
    problems = []
    for s, a in zip(specs, arrays):
        for axis, (d, n) in enumerate(zip(s["shape"], a.shape)):
            if not isinstance(d, str):
                continue
            if d in values and values[d] != n:
                problems.append(f"dim {d} is {values[d]} in one input and {n} in input '{s['name']}' (axis {axis})")
                continue
            values[d] = int(n)
            dim = dims.get(d)
            if dim is not None and not dim.contains(n):
                problems.append(f"input '{s['name']}' axis {axis}: dim {d}={n} is outside its range "
                                f"{dim.min}..{dim.max}")
    return values, problems


def default_sizes(dims: dict[str, Dim]) -> dict[str, int]:
    """The size each dim takes where none is asked for: its first optimized size, else its smallest."""
    return {n: (d.opt[0] if d.opt else d.min) for n, d in dims.items()}


def pick_function(functions: list[dict], values: dict[str, int]) -> str:
    """The specialized function for these dim values, else the symbolic ``main``."""
    for f in functions:
        if all(values.get(k) == v for k, v in f["dims"].items()):
            return f["name"]
    return "main"


def sample_points(dims: dict[str, Dim]) -> list[dict[str, int]]:
    """Dim values the built-in check runs: every specialization, the smallest and the largest
    sizes, and one odd size in between (a size no kernel was specialized for)."""
    lo = {n: d.min for n, d in dims.items()}
    points = [{**lo, **b} for b in specializations(dims)]
    hi = {n: d.max for n, d in dims.items()}
    mid = {n: max(d.min, min(d.max, (d.min + d.max) // 2 | 1)) for n, d in dims.items()}
    for p in (lo, mid, hi):
        if p not in points:
            points.append(p)
    return points


def static_shapes(prim_func) -> bool:
    """True when every buffer of a TIR function has a constant shape (MetaSchedule tunes only those)."""
    from tvm import tirx

    shapes = []
    for p in prim_func.params:  # TVM 0.27: a buffer parameter is a Var with the buffer's shape
        try:
            shapes.append(list(p.shape))
        except AttributeError:  # a scalar parameter (a dim passed in): the kernel is dynamic
            return False
    return all(isinstance(x, tirx.IntImm) for shape in shapes for x in shape)


def parse_shapes(texts, dims: dict[str, Dim]) -> list[dict[str, int]]:
    """``--shapes S=7,64,300`` (repeatable): the sizes to run at, every combination of the dims
    given; a dim not given takes its first optimized size, else its smallest. Each size is
    checked against the artifact's range."""
    if not texts:
        return []
    if not dims:
        raise DeployError("--shapes: this artifact has no dynamic dims (its input shapes are fixed)",
                          hint="compile with --dim NAME=MIN..MAX to get one that takes a range of shapes")
    lists: dict[str, list[int]] = {}
    for t in texts:
        name, sep, values = t.partition("=")
        name = name.strip()
        try:
            sizes = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            sizes = []
        if not sep or not sizes:
            raise DeployError(f"bad --shapes '{t}'", hint="write it as DIM=N[,N...], e.g. --shapes S=7,64,300")
        if name not in dims:
            raise DeployError(f"--shapes {t}: the artifact has no dim '{name}'",
                              hint="its dims: " + ", ".join(str(d) for d in dims.values()))
        outside = [n for n in sizes if not dims[name].contains(n)]
        if outside:
            raise DeployError(f"--shapes {t}: {outside} outside the range of {dims[name]}",
                              hint=f"sizes of {name} must be in {dims[name].min}..{dims[name].max}")
        lists[name] = sizes
    base = default_sizes(dims)
    names = list(lists)
    return [{**base, **dict(zip(names, combo))} for combo in itertools.product(*[lists[n] for n in names])]


def point_text(point: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())

"""How a user asks for a precision: one options object for compile, tune, deploy build and the CLI.

``precision`` is fp32, fp16 or int8; ``quantize="int8"`` (``--quantize int8``) is a documented
alias of ``precision="int8"``. ``QuantOptions`` holds how int8 is calibrated and gated; it applies
only with int8. Its hook (the calibration and QDQ rewrite) is made once, so a compile that tunes
first calibrates once for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import DeployError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class QuantOptions:
    calibration: Path | None = None   # .npz or directory of .npy/.npz samples keyed by input name
    calibrator: str = "minmax"        # a name in quantize.calibrate.CALIBRATORS
    per_channel: bool = True          # per-channel weight scales (else per-tensor)
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float
    max_accuracy_drop: float | None = None  # accuracy gate: fall back sensitive layers until it holds
    random_calibration: bool = False  # calibrate on random inputs (testing only)
    dynamic: bool = False             # int8 MatMuls with activation scales computed at run time (like ONNX
                                      # Runtime's quantize_dynamic): no calibration data; transformers
    speed_check: bool = True          # where the target runs here: int8 only for layers it makes faster,
                                      # float32 if the int8 build is not faster end to end (quantize/select.py)
    _hook: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

    def given(self) -> list[str]:
        """The CLI flags of options set away from their defaults that only int8 uses."""
        return [flag for flag, v in (("--calibration", self.calibration), ("--exclude", self.exclude),
                                     ("--max-accuracy-drop", self.max_accuracy_drop),
                                     ("--random-calibration", self.random_calibration),
                                     ("--dynamic", self.dynamic),
                                     ("--no-speed-check", not self.speed_check)) if v]

    def hook(self):
        """The ONNX hook that calibrates and writes QDQ (quantize.int8.Int8Hook), made once."""
        if self._hook is None:
            from .int8 import Int8Hook

            self._hook = Int8Hook(self.calibration, self.calibrator, self.per_channel, self.exclude,
                                  self.max_accuracy_drop, self.random_calibration, self.dynamic)
        return self._hook

    def display(self) -> dict:
        return {n: getattr(self, n) for n in self.names() if getattr(self, n) not in (None, False, [])}


def resolve_precision(precision: str, quantize: str | None) -> str:
    """The precision a build computes in; ``quantize`` is the --quantize alias (int8 only)."""
    if precision not in PRECISIONS:
        raise DeployError(f"unknown precision '{precision}'", hint=f"use one of {', '.join(PRECISIONS)}")
    if quantize is None:
        return precision
    if quantize != "int8":
        raise DeployError(f"unknown --quantize '{quantize}'", hint="use --quantize int8 (the same as --precision int8)")
    if precision == "fp16":
        raise DeployError("--precision fp16 and --quantize int8 cannot be combined",
                          hint="pick one: int8 layers fall back to float32, not float16")
    return "int8"


def check(precision: str, quant: QuantOptions) -> None:
    """Refuse an unknown precision, int8 options without int8, and an unknown calibrator."""
    from .calibrate import check_calibrator

    resolve_precision(precision, None)
    if precision != "int8":
        given = quant.given()
        if given:
            raise DeployError(f"{', '.join(given)} only apply to --quantize int8", hint="add --quantize int8")
    else:
        check_calibrator(quant.calibrator)
        if quant.dynamic and (quant.calibrator != "minmax" or quant.random_calibration):
            raise DeployError("--dynamic int8 has no calibration: its activation scales are computed at run time",
                              hint="drop --calibrator/--random-calibration (a --calibration file, if given, only "
                                   "measures accuracy), or drop --dynamic for calibrated static int8")


def split_kwargs(kwargs: dict) -> dict:
    """``pipeline.compile(..., calibration=..., quantize="int8")``: the QuantOptions fields taken out
    of flat keyword arguments into ``quant``, and ``quantize`` into ``precision``."""
    kwargs = dict(kwargs)
    q = {n: kwargs.pop(n) for n in QuantOptions.names() if n in kwargs}
    if q:
        if "quant" in kwargs:
            raise DeployError("pass the int8 options either flat or as quant=QuantOptions(...), not both")
        kwargs["quant"] = QuantOptions(**q)
    if "quantize" in kwargs:
        kwargs["precision"] = resolve_precision(kwargs.get("precision", "fp32"), kwargs.pop("quantize"))
    return kwargs

"""User-facing errors: one message that says what is wrong and what to do about it."""

from __future__ import annotations


class DeployError(Exception):
    """An error caused by the user's input or machine, shown without a traceback.

    ``message`` says what is wrong, ``hint`` what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"


class VerificationError(DeployError):
    """Outputs disagree with the reference beyond the tolerance."""


class CodegenError(DeployError):
    """TVM could not compile the optimized module into code (``build.build_library``)."""


class CheckFailed(DeployError):
    """The built-in check found the artifact's outputs differ from ONNX Runtime's (``check.py``)."""


def last_line(e: BaseException) -> str:
    """The line of an exception's message that says what failed: TVM puts the cause last, except
    where it prints the offending IR after it ("Offending call: R.nn.conv2d_transpose(...)"): then
    the error line, with the op it names."""
    import re

    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    for i, ln in enumerate(lines):
        if ln.startswith("Offending call") and i > 0:
            op = re.search(r"R\.([\w.]+)\(", " ".join(lines[i:i + 2]))
            return lines[i - 1] + (f" (op: {op.group(1)})" if op else "")
    return lines[-1]


def toml_kind(value) -> str:
    """What a TOML value is, in words: for a message that says a key holds the wrong kind of value."""
    if isinstance(value, dict):
        return "a table"
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"))
    name = next((n for t, n in kinds if isinstance(value, t)), f"a {type(value).__name__}")
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{name} ({text if len(text) <= 40 else text[:37] + '...'})"


def unsupported_ops(missing: dict[str, list[str]], model: str, hint: str) -> "DeployError":
    """One error listing every op type an importer cannot take, with up to five of its nodes each."""
    lines = [f"{op} ({len(nodes)}x: {', '.join(nodes[:5])}{', ...' if len(nodes) > 5 else ''})"
             for op, nodes in sorted(missing.items())]
    return DeployError(f"{len(missing)} op type(s) in {model} cannot be imported by TVM:\n    " + "\n    ".join(lines),
                       hint=hint)

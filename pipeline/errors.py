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
    """The last line of an exception's message (TVM puts the cause there), or its type's name."""
    return (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()

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

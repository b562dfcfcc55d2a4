"""User-facing errors.

Anything a user can cause (a missing path, a bad flag value, a corrupt image, a mismatched cache or checkpoint)
raises :class:`UserError`. The CLI prints its message as one line and exits with code 2, without a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; its message names the cause and what to do."""


class BadImageError(UserError):
    """An image file that cannot be decoded."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # pickled by DataLoader workers and multiprocessing: rebuild from both fields
        return (type(self), (self.path, self.reason))


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""

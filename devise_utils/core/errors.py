"""Errors for bad input: each message names the file (or parameter) and the fix."""

from __future__ import annotations


class DataError(ValueError):
    """The dataset folder is inconsistent; the message names the file and the fix."""


class NotTrainedError(RuntimeError):
    """A result was asked of a stage that has not been trained (evaluation never trains)."""

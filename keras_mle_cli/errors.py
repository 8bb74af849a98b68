"""The command's two kinds of failure, shared by the front end and the fitting half.

Standard library only: the front end raises them before TensorFlow is imported, and
`keras_mle.cli` raises the same classes, which `keras_mle_cli.main` turns into exit codes.
"""

from __future__ import annotations

__all__ = ["UsageError", "FitError"]


class UsageError(Exception):
    """Bad input: reported on one line, exit code 2, nothing written."""


class FitError(Exception):
    """No trustworthy answer (divergence, no convergence, a non-finite model): exit code 1."""

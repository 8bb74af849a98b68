"""How the command speaks on stderr: one line per error or warning."""

from __future__ import annotations

import sys

__all__ = ["report"]


def report(command, kind, error) -> None:
    """One line on stderr: `keras-mle COMMAND: KIND: MESSAGE` (the message's blanks collapsed)."""
    message = " ".join(str(error).split())
    print(f"keras-mle {command}: {kind}: {message}", file=sys.stderr, flush=True)

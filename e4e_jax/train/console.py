"""Progress lines of the training loop: one write per line, newline included.

`print(msg, flush=True)` writes the text and the newline separately; when stdout and stderr share
a file (`> log 2>&1`), the metric writer's thread can log in between and glue its line to ours.
"""
from __future__ import annotations

import sys


def say(message: str, err: bool = False) -> None:
    """Writes `message` and its newline in one call to stdout (stderr with `err`), flushed."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message.rstrip("\n") + "\n")
    stream.flush()

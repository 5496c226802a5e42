"""Files of the data folder that hold secrets."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private_file(path: Path, content: str) -> str:
    """Create ``path`` (mode 0600) with ``content`` atomically, unless it exists; return what it holds.

    Written to a temporary file, flushed to disk, then linked into place: a reader
    never sees a partial file, and of two processes racing, the first link wins
    and both return its content.
    """
    if path.exists():
        return path.read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:  # mkstemp creates it 0600
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_text(encoding="utf-8")

"""Files a user keeps (configs, results, exports, caches) are written whole or not at all."""

import os
from pathlib import Path


def write_beside(path: Path, data: str | bytes) -> Path:
    """`data` written and flushed to disk beside `path`, under a temporary name of this process (two writers of one
    file, e.g. two tune.py workers, do not write into each other's), for the caller to rename over `path`; a failure
    (a full disk) leaves no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write beside the target, then rename over it, so a reader never sees half a file; a failure leaves the
    previous file as it was and no temporary one."""
    tmp = write_beside(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

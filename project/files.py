"""Files a user keeps (configs, results, exports, caches) are written whole or not at all."""

import os
from pathlib import Path


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write beside the target, flush to disk, then rename over it, so a reader never sees half a file (the
    temporary name is per process, so that two writers of the same file, e.g. two tune.py workers, do not write
    into each other's); a failure (a full disk) leaves the previous file as it was and no temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

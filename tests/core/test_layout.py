"""The core stays small and never imports an extra: what train.py imports, plus the default data module and net.
The budget was 1,200 lines before the data contract, ImageFolderDataModule and the fault handling (run folders
claimed, paths expanded, whole files, the one-line exit for every error, stop signals while loading, background
threads, `--ckpt_path last` telling finished runs from unfinished ones, the Trainer options that train nothing,
checksummed image caches, the lock of a resumed run) joined it: about 580 lines. Then 1,780 to 1,800: a Trainer
whose batch limits read 1 as one batch (jsonargparse made it 1.0, all batches) and a config.yaml that names no run
folder (running it again overwrote the old run)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PROBE = """
import json, sys
from pathlib import Path
import project.cli, project.data, project.models.cnn
root = Path.cwd() / "project"
files = sorted({str(Path(m.__file__).resolve()) for m in list(sys.modules.values())
                if getattr(m, "__file__", None) and Path(m.__file__).resolve().is_relative_to(root)})
print(json.dumps(files))
"""


def test_the_core_is_at_most_1800_lines_and_imports_no_extra():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    files = json.loads(done.stdout)
    assert not [f for f in files if "/project/extras/" in f], "the core imports an extra"
    lines = sum(len(Path(f).read_text().splitlines()) for f in files)
    assert lines <= 1800, f"the core is {lines} lines in {len(files)} files"

import atexit
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from tests.engines import Postgres, Slurm, postgres_missing, slurm_missing
from tests.forkserver import forked
from tests.forkserver import fresh as new_interpreter
from tests.idx_files import write_dataset

REPO = Path(__file__).resolve().parents[1]
# Decoded image folders are cached in the user's cache folder: the tests' own, not the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker process per core (-n auto): one thread each, in this process and the ones it starts, or each
    # torch spreads over every core and their threads keep taking the cores from each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
# A run of a few batches: enough to exercise every stage and write every file, in seconds. Without the two test
# figures: matplotlib draws them in 0.5-0.6 s, 40% of such a run (measured here, in this process and forked); the
# tests that read them, or whose fault meets them, put them back with FIGURES.
FAST_RUN = (
    "--max_epochs 1 --limit_train_batches 3 --limit_val_batches 1 --limit_test_batches 2 --log_every_n_steps 1 "
    "--enable_progress_bar false --enable_model_summary false --data.batch_size 32 --data.val_size 100 "
    "--callbacks.test_pictures null"
).split()
FIGURES = ["--callbacks.test_pictures", "TestPictures"]
# The default recipe's CNN narrowed (same layers, fewer channels): the same code paths at a fraction of the
# compute. Only for the CNN: where a config or flag before it names another net, use FAST_RUN alone.
NARROW_CNN = "--model.net.channels [4,8,16] --model.net.hidden 16".split()
FAST_TRAINER = FAST_RUN + NARROW_CNN


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the SLURM tests (they wait on the cluster's clock), then the other slow ones, then the rest.
    Tests go to the processes in this order, a couple at a time (--maxschedchunk 1 in pyproject.toml), so the long
    ones start early and run beside many short ones, and the processes end together. The fast tier's stopwatch
    (tests/test_fast_tier.py) comes last of all."""
    items.sort(key=lambda item: ("slurm" not in item.fixturenames, item.get_closest_marker("slow") is None,
                                 item.path.name == "test_fast_tier.py"))  # fmt: skip


@pytest.fixture
def small_disk(tmp_path, request):
    """A 16 MB tmpfs (another size: `@pytest.mark.parametrize("small_disk", ["64m"], indirect=True)`): filled up
    or remounted read-only by the tests (root only; skipped with the reason else)."""
    mount, size = tmp_path / "disk", getattr(request, "param", "16m")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A data folder in torchvision's layout (data/MNIST/raw) holding 600 training and 200 test images."""
    data = tmp_path / "data"
    write_dataset(data / "MNIST" / "raw")
    return data


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One default run (fit, then test) on synthetic data, in this process, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("run")
    write_dataset(root / "data" / "MNIST" / "raw")
    done = run_main(
        "--data.data_dir", str(root / "data"), "--default_root_dir", str(root / "logs"), *FAST_TRAINER, *FIGURES
    )
    assert done.returncode == 0, done.stderr
    return root, done


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, fresh: bool = False) -> subprocess.CompletedProcess:
    """`python train.py ARGS` as a process of its own, as a user would type it: forked from this test process's
    fork server, which imported the libraries once (tests/forkserver.py); `fresh`: in a new interpreter, for what
    only one shows (a warning raised while the libraries import)."""
    command, env = [str(REPO / "train.py"), *args], {**os.environ, **(env or {})}
    return new_interpreter(command, cwd, env) if fresh else forked(command, cwd, env)


def run_main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """What run_cli gives, from train.py's main() in this process: no Python start and imports (seconds each).
    For tests where the process is not the point; warnings already shown in this process are not shown again, so
    tests of what the console shows use run_cli."""
    from project.run.cli import main

    out, err = io.StringIO(), io.StringIO()
    # Lightning's console loggers hold the stderr of import time: pointed at the capture for this run.
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    handlers = [h for logger in loggers for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    streams = [handler.setStream(err) for handler in handlers]
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(args))
    except SystemExit as end:  # --print_config ends the parser's way
        status = end.code if isinstance(end.code, int) else 0
    finally:
        os.chdir(before)
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
    return subprocess.CompletedProcess(["train.py", *args], status, out.getvalue(), err.getvalue())


def copy_of_run(trained, tmp_path: Path) -> tuple[Path, str]:
    """The shared run copied (tests that add to a run must not change the one others read); its best checkpoint."""
    root, _ = trained
    shutil.copytree(root / "logs", tmp_path / "logs")
    best = results(root / "logs")["best_checkpoint"]
    return tmp_path / "logs", str(tmp_path / "logs" / Path(best).relative_to(root / "logs"))


def run_folder(root: Path) -> Path:
    """The single run folder (logs/<name>/version_N) under root."""
    folders = [p.parent for p in root.rglob("config.yaml")]
    assert len(folders) == 1, f"expected one run folder under {root}, found {folders}"
    return folders[0]


def results(root: Path) -> dict:
    return json.loads((run_folder(root) / "results.json").read_text())


def read_events(folder: Path, other: dict | None = None) -> tuple[dict[str, list[float]], object]:
    """Scalars (tag -> values in step order) and the HPARAMS experiment (its first summary), read back with
    TensorBoard's reader, file by file in the order they were written (not by name: a writer's number in its
    name counts up per process, so in a test process that made ten writers before, the 10th file sorts before
    the 9th).
    Images (tag -> list of encoded images) and histogram tags go into `other` when given."""
    scalars: dict[str, list[float]] = {}
    experiment = HParamsPluginData().experiment
    for events in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
        if other is not None:
            for tag in accumulator.Tags()["images"]:
                other.setdefault("images", {}).setdefault(tag, []).extend(accumulator.Images(tag))
            other.setdefault("histograms", set()).update(accumulator.Tags()["histograms"])
            other["graph"] = other.get("graph", False) or accumulator.Tags()["graph"]
        try:
            content = accumulator.PluginTagToContent("hparams").get("_hparams_/experiment")
        except KeyError:  # this file holds no hparams
            content = None
        if content and not experiment.metric_infos:  # the first one, as TensorBoard reads a run (EventAccumulator)
            experiment = HParamsPluginData.FromString(content).experiment
    return scalars, experiment


def scalars_by_step(folder: Path, tag: str) -> dict[int, float]:
    """Every value of `tag` by step over the run's event files, later files winning (a resumed run re-logs
    the steps its killed predecessor had logged past the checkpoint)."""
    values: dict[int, float] = {}
    for events in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return values


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    if reason := slurm_missing():
        pytest.skip(reason)
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    if reason := postgres_missing():
        pytest.skip(reason)
    # Not under pytest's temporary folder: its parents are private to root, and the server runs as postgres.
    server = Postgres(Path(tempfile.mkdtemp(prefix="postgres-")))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)

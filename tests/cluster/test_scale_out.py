"""Scale-out on real engines, on this machine: SLURM preemption and requeue, and a two-launcher torchrun; the
commands are docs/scaling.md's, read from it. (Two tune.py workers on one PostgreSQL study: tests/extras/test_tune.py.)
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from project.run import resume
from tests.conftest import FAST_TRAINER, NARROW_CNN, REPO, results, run_cli, run_folder, run_main, scalars_by_step
from tests.engines import wait_until
from tests.idx_files import write_dataset

pytestmark = pytest.mark.slow

# Three short epochs of the default recipe's CNN, narrowed (OneCycle, dropout, shuffling), as in the resume tests.
TRAINING = (
    "--max_epochs 3 --data.batch_size 32 --data.val_size 200 --limit_test_batches 2 --log_every_n_steps 1 "
    "--enable_progress_bar false --enable_model_summary false --seed_everything 7"
).split() + NARROW_CNN
# docs/scaling.md's GPU job on one CPU process: a DDP resume is not bitwise (README, Reliability), one process is.
ONE_CPU_PROCESS = "--accelerator cpu --devices 1".split()


def readme_block(containing: str) -> str:
    """docs/scaling.md's ```bash block that contains `containing`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "scaling.md").read_text(), re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"docs/scaling.md should have one bash block with {containing!r}"
    return found[0]


def adapted(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in text, f"docs/scaling.md's command no longer has {old!r}: update this test with it"
        text = text.replace(old, new)
    return text


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    different = [name for name in ours if not torch.equal(ours[name], reference[name])]
    assert not different, f"weights differ from the uninterrupted run: {different}"


def logged_steps(folder: Path) -> list[int]:
    """Every step at which train/loss was written, over all event files of a run (repeats included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in folder.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "train/loss" in accumulator.Tags()["scalars"]:
            steps += [event.step for event in accumulator.Scalars("train/loss")]
    return sorted(steps)


# ---------------------------------------------------------------------------------------------------- SLURM


def sbatch_script(time_limit: str, signal_at: int, args: list[str]) -> str:
    """docs/scaling.md's job script on this one-node, CPU-only cluster: one task, the given data and epochs."""
    script = adapted(
        readme_block("#SBATCH --requeue"),
        [
            ("#SBATCH --nodes=2", "#SBATCH --nodes=1"),
            ("#SBATCH --ntasks-per-node=8", "#SBATCH --ntasks-per-node=1"),
            ("#SBATCH --gpus-per-node=8\n", ""),
            ("#SBATCH --time=24:00:00", f"#SBATCH --time={time_limit}"),
            ("#SBATCH --signal=USR1@120", f"#SBATCH --signal=USR1@{signal_at}"),
            ("--accelerator gpu --devices 8 --num_nodes 2 --strategy ddp", " ".join(ONE_CPU_PROCESS)),
        ],
    )
    return script.rstrip("\n") + " " + " ".join(args) + "\n"


def submit(slurm, tmp_path: Path, script: str, env: dict | None = None) -> tuple[str, Path]:
    (tmp_path / "job.sh").write_text(script)
    output = tmp_path / "job.out"
    environment = {**slurm.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    done = subprocess.run(
        ["sbatch", "--parsable", f"--output={output}", f"--chdir={REPO}", str(tmp_path / "job.sh")],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0], output


ENDED_BADLY = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")


def wait_for_job(slurm, job_id: str, output: Path, timeout: float = 400) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = slurm.job(job_id)
        if job.get("JobState") in ("COMPLETED", *ENDED_BADLY):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end: {slurm.job(job_id)}\n{output.read_text()}")


def wait_for_file(path: Path, slurm, job_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared: {slurm.job(job_id)}"
        time.sleep(0.1)


def assert_one_clean_run(root: Path, output: str) -> Path:
    """One run folder holding everything, a results.json, and a job output without failures."""
    folder = run_folder(root)
    strays = [p for p in root.rglob("*") if p.is_file() and folder not in p.parents]
    assert not strays, f"files outside the run folder: {strays}"
    assert (folder / "results.json").exists()
    assert "FAILED" not in output and "srun: error" not in output and "Traceback" not in output, output
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """The data, and a run of TRAINING that nothing stops, launched the way the job launches its task."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    data = write_dataset(tmp / "data" / "MNIST" / "raw", train=2200).parents[1]
    done = run_cli("--data.data_dir", str(data), *ONE_CPU_PROCESS, *TRAINING, "--default_root_dir", str(tmp / "logs"))
    assert done.returncode == 0, done.stderr
    return data, run_folder(tmp / "logs")


@pytest.mark.parametrize(
    "stage, slow_stage, preempt",
    [
        ("validating", ["--data", "tests.slow_stages.SlowValidation"], "scancel --signal=USR1"),
        ("saving", ["--trainer.plugins", "tests.slow_stages.SlowCheckpointIO"], "scancel --signal=USR1"),
        ("validating", ["--data", "tests.slow_stages.SlowValidation"], "scontrol requeue"),
    ],
)
def test_slurm_preemption_at_an_epoch_end_resumes_to_the_same_weights(
    slurm, uninterrupted, tmp_path, stage, slow_stage, preempt
):
    """Preempted while validating or writing a checkpoint: the job saves at the epoch end, requeues (on SIGUSR1)
    or is requeued (scontrol requeue sends SIGTERM), comes back by itself and ends as if never stopped."""
    data, reference = uninterrupted
    root = tmp_path / "logs"
    args = [*slow_stage, "--data.data_dir", str(data), *TRAINING, "--default_root_dir", str(root)]
    job_id, output = submit(slurm, tmp_path, sbatch_script("10:00", 120, args), {"MARKER_DIR": str(tmp_path)})
    wait_for_file(tmp_path / stage, slurm, job_id)
    command = preempt.split() + [job_id]
    assert subprocess.run(command, env=slurm.env, capture_output=True).returncode == 0
    # Back in the queue, waiting only for the begin time SLURM gives a requeued job (2 minutes on): it will start
    # by itself, not held. The test moves that time to now rather than wait for it.
    waits_for_begin_time = {"JobState": "PENDING", "Reason": "BeginTime"}
    wait_until(lambda: waits_for_begin_time.items() <= slurm.job(job_id).items(), 60, f"job {job_id} to be requeued")
    slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")

    job = wait_for_job(slurm, job_id, output)
    log = output.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", f"{job}\n{log}"
    assert job["Restarts"] == "1", log
    signal_name = "SIGUSR1" if "USR1" in preempt else "SIGTERM"
    assert re.findall(rf"{signal_name}: saved \S+last.ckpt at step (\d+)", log) == ["63"], log  # the epoch end
    folder = assert_one_clean_run(root, log)
    assert_same_weights(weights(folder), weights(reference))
    assert results(root)["metrics"]["test/acc"] == results(reference.parents[1])["metrics"]["test/acc"]
    # One TensorBoard run, steps counting on across the restart: each step written once.
    assert logged_steps(folder) == logged_steps(reference)
    assert scalars_by_step(folder, "train/loss") == scalars_by_step(reference, "train/loss")


# --------------------------------------------------------------------------------------------------- torchrun


def torchrun_command(node_rank: int, port: int, args: list[str]) -> list[str]:
    """docs/scaling.md's multi-node torchrun command for one node of two on this machine, one CPU process each."""
    block = readme_block("torchrun --nnodes 2")
    command = " ".join(line.strip().rstrip("\\") for line in block.splitlines() if not line.startswith("#"))
    command = adapted(
        command,
        [
            ("--nproc_per_node 8", "--nproc_per_node 1"),
            ("--node_rank $NODE_RANK", f"--node_rank {node_rank}"),
            ("--master_addr node0", "--master_addr 127.0.0.1"),
            ("--master_port 29500", f"--master_port {port}"),
            ("--accelerator gpu --devices 8", "--accelerator cpu --devices 1"),
        ],
    )
    return [*command.split(), *args]


def test_two_torchrun_launchers_train_one_run_with_the_accuracy_of_one_process(tmp_path):
    from tests.engines import free_port

    data = write_dataset(tmp_path / "data" / "MNIST" / "raw").parents[1]
    root = tmp_path / "logs"
    # The whole test set (200 images, 100 a process): two batches a process would score other images than two
    # batches of one process.
    args = ["--data.data_dir", str(data), *TRAINING, "--max_epochs", "1", "--default_root_dir", str(root),
            "--limit_test_batches", "1.0"]  # fmt: skip
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    nodes = [
        subprocess.Popen(torchrun_command(rank, port, args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "MEMBER: 2/2" in outputs[0] + outputs[1]  # two processes, one per launcher

    folder = run_folder(root)  # one run folder, one results.json, written by global rank 0
    assert len(list(root.rglob("results.json"))) == 1
    two = results(root)
    tested = two["tested_checkpoint"]
    assert Path(tested).parents[1] == folder
    # One process tests the same checkpoint (into the same run folder, whose results.json it adds its time to).
    alone = run_main("test", "--ckpt_path", tested, "--accelerator", "cpu", "--devices", "1", *TRAINING[4:],
                    "--limit_test_batches", "1.0")  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    one = results(root)
    assert one["wall_seconds"] == two["wall_seconds"] and one["test_wall_seconds"] > 0  # the fit's time kept
    assert one["metrics"]["test/acc"] == two["metrics"]["test/acc"]


def test_slurm_time_limit_signal_mid_epoch_resumes_at_the_saved_step(slurm, uninterrupted, tmp_path):
    """A two-minute time limit with --signal=USR1@60: SLURM checks time limits every 30 s and signals up to 30 s
    early, so the signal falls 30-60 s into each start (after the imports), mostly mid-epoch; every start saves,
    requeues and exits, until the run is done. Each step sleeps 50 ms (tests.slow_stages.Paced): over 60 s of
    training on any machine, more than one start holds. A signal that falls once the run is done (as the last
    start exits) changes nothing: the job completes."""
    data, _ = uninterrupted
    root = tmp_path / "logs"
    epochs = 20
    args = ["--trainer.callbacks+=tests.slow_stages.Paced", "--trainer.callbacks.seconds", "0.05", *TRAINING]
    args += ["--data.data_dir", str(data), "--max_epochs", str(epochs), "--default_root_dir", str(root)]
    job_id, output = submit(slurm, tmp_path, sbatch_script("2", 60, args))
    deadline = time.monotonic() + 600
    while (job := slurm.job(job_id)).get("JobState") != "COMPLETED":
        # A string, which pytest shows whole (a tuple it cuts short): the job's output says what happened.
        assert time.monotonic() < deadline and job.get("JobState") not in ENDED_BADLY, f"{job}\n{output.read_text()}"
        if job.get("Reason") == "BeginTime":  # skip SLURM's 2-minute hold of a requeued job, to save time
            slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        time.sleep(1)
    log = output.read_text()
    assert job["ExitCode"] == "0:0"
    restarts = int(job["Restarts"])
    saved = [int(step) for step in re.findall(r"SIGUSR1: saved \S+last.ckpt at step (\d+)", log)]
    # A signal after the fit's last step (the test then stops, and the requeued start tests again) saves nothing.
    tests_again = log.count("SIGUSR1: stopped testing (last.ckpt kept); requeueing")
    assert restarts >= 1 and len(saved) + tests_again == restarts, log
    folder = assert_one_clean_run(root, log)
    assert results(root)["global_step"] == epochs * 63  # the planned number of steps, no more
    steps = logged_steps(folder)
    assert len(steps) == len(set(steps)), "a step was trained (and logged) twice"
    # Every step but the one each mid-epoch preemption stopped after (Lightning writes its point after the save).
    unwritten = {step - 1 for step in saved if step % 63}
    assert set(range(epochs * 63)) - set(steps) == unwritten and set(steps) <= set(range(epochs * 63))


def test_a_slurm_job_of_two_tasks_whose_run_another_process_continues_ends_at_once(slurm, mnist_dir, tmp_path):
    """docs/scaling.md's job with two tasks (DDP on the CPU) and a run another process is continuing: task 0 is
    refused with one line, and srun's --kill-on-bad-exit ends task 1, which would else wait for task 0 at the start
    of DDP until its timeout (30 minutes)."""
    root = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(root), *FAST_TRAINER, "--max_epochs", "2"]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, "--accelerator", "cpu", "--devices", "1", *stop).returncode == 143  # an unfinished run
    script = adapted(
        readme_block("#SBATCH --requeue"),
        [
            ("#SBATCH --nodes=2", "#SBATCH --nodes=1"),
            ("#SBATCH --ntasks-per-node=8", "#SBATCH --ntasks-per-node=2"),
            ("#SBATCH --gpus-per-node=8\n", ""),
            ("#SBATCH --time=24:00:00", "#SBATCH --time=10:00"),
            ("--accelerator gpu --devices 8 --num_nodes 2", "--accelerator cpu --devices 2"),
        ],
    )
    held = resume.lock_run(run_folder(root))  # as a process that continues the run holds it
    try:
        started = time.monotonic()
        job_id, output = submit(slurm, tmp_path, script.rstrip("\n") + " " + " ".join(args) + "\n")
        job = wait_for_job(slurm, job_id, output, timeout=240)
    finally:
        os.close(held)
    log = output.read_text()
    assert job["JobState"] == "FAILED" and time.monotonic() - started < 180, f"{job}\n{log}"
    assert f"error: {run_folder(root)} is being continued by another process" in log, log
    assert "Traceback" not in log, log

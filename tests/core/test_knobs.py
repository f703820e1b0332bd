"""Every option docs/strategies.md names under "Common recipes" and "Training strategies" changes something computed.

Each knob is trained twice through the CLI's own classes (a few steps on synthetic data, in this process): once
as its recipe has it, once with the option changed; something the run computed must differ (the weights after
the steps, the number of steps or batches, the split). A README option that is neither here nor in EXEMPT fails
the last test: a new option comes with its proof, or leaves the docs.
"""

import itertools
import re
from pathlib import Path

import pytest
import torch

from project.run.cli import RunCLI
from tests.conftest import NARROW_CNN, REPO, scalars_by_step
from tests.idx_files import write_dataset

# Two epochs of two steps: per-epoch schedules act once, per-step ones three times. A CNN of the default's
# shape, narrower: every knob acts on it as on the default, at a fraction of the time.
SHORT = (
    "--max_epochs 2 --limit_train_batches 2 --limit_val_batches 1 --limit_test_batches 1 --data.val_size 100 "
    "--data.batch_size 32 --enable_progress_bar false --enable_model_summary false"
).split() + NARROW_CNN
SGD = ["--model.optimizer", "SGD", "--model.optimizer.lr", "0.05"]
MLP = ["--model.net", "MLP"]
STEP = ["--model.scheduler", "StepLR", "--model.scheduler.step_size", "1"]

# option: (the recipe it is changed in, the change, what must differ)
KNOBS = {
    "--model.optimizer.lr": ([], ["--model.optimizer.lr", "0.01"], "weights"),
    "--model.optimizer": ([], SGD, "weights"),
    "--model.optimizer.momentum": (SGD, ["--model.optimizer.momentum", "0.9"], "weights"),
    "--model.optimizer.nesterov": (
        [*SGD, "--model.optimizer.momentum", "0.9"],
        ["--model.optimizer.nesterov", "true"],
        "weights",
    ),
    "--model.optimizer.weight_decay": ([], ["--model.optimizer.weight_decay", "0.5"], "weights"),
    "--model.exempt_bias_and_norm": (
        ["--model.optimizer.weight_decay", "0.5"],
        ["--model.exempt_bias_and_norm", "false"],
        "weights",
    ),
    "--model.param_groups": ([], ["--model.param_groups", '[{"prefix": "features", "lr": 0.05}]'], "weights"),
    "--model.scheduler": ([], STEP, "weights"),
    "--model.scheduler.step_size": (STEP, ["--model.scheduler.step_size", "5"], "weights"),
    "--model.scheduler.gamma": (STEP, ["--model.scheduler.gamma", "0.01"], "weights"),
    "--model.scheduler.pct_start": ([], ["--model.scheduler.pct_start", "0.9"], "weights"),
    "--model.net": ([], MLP, "weights"),
    "--model.net.dropout": ([], ["--model.net.dropout", "0.6"], "weights"),
    "--model.net.batch_norm": ([], ["--model.net.batch_norm", "false"], "weights"),
    "--model.net.channels": ([], ["--model.net.channels", "[16,32]"], "weights"),
    "--model.net.hidden_sizes": (MLP, ["--model.net.hidden_sizes", "[256,128]"], "weights"),
    "--model.label_smoothing": ([], ["--model.label_smoothing", "0.3"], "weights"),
    "--model.l1": ([], ["--model.l1", "0.01"], "weights"),
    "--model.loss": ([], ["--model.loss", "mse"], "weights"),
    "--data.batch_size": ([], ["--data.batch_size", "16"], "weights"),
    "--data.augment": ([], ["--data.augment", "true"], "weights"),
    "--data.rotation": (["--data.augment", "true"], ["--data.rotation", "45"], "weights"),
    "--data.val_size": ([], ["--data.val_size", "200"], "split"),
    "--data.split_seed": ([], ["--data.split_seed", "1"], "split"),
    "--seed_everything": ([], ["--seed_everything", "1"], "weights"),
    "--accumulate_grad_batches": ([], ["--accumulate_grad_batches", "2"], "steps"),
    "--max_epochs": ([], ["--max_epochs", "1"], "steps"),
    "--gradient_clip_val": ([], ["--gradient_clip_val", "1e-4"], "weights"),
    "--gradient_clip_algorithm": (["--gradient_clip_val", "1e-4"], ["--gradient_clip_algorithm", "value"], "weights"),
    "--precision": ([], ["--precision", "bf16-mixed"], "weights"),
    "--log_every_n_steps": ([], ["--log_every_n_steps", "1"], "logged"),
}
# Options the README names that choose files, hardware or output, or whose effect another test shows.
EXEMPT = {
    "--config": "a file of options: each option is tested here",
    "--ckpt_path": "tests/extras/test_resume.py",
    "--data.data_dir": "where the files are",
    "--data.dataset": "which files: tests/core/test_data.py",
    "--devices": "hardware: tests/core/test_cli.py (two processes)",
    "--default_root_dir": "where the logs go",
    "--callbacks.non_finite": "tests/core/test_strategies.py (a NaN loss stops the run)",
    "--callbacks.non_finite.every_n_steps": "tests/core/test_strategies.py",
    "--data.help": "help",
    "--model.net.help": "help",
    "--help": "help",
    "--print_config": "prints the config",
    "--debug": "shows tracebacks: tests/core/test_bad_input.py",
    "--trainer.max_epochs": "the same option as --max_epochs",
    "--net": "tune.py: tests/extras/test_tune.py",
    "--trials": "tune.py: tests/extras/test_tune.py",
    "--storage": "tune.py: tests/extras/test_tune.py",
    "--space": "tune.py: tests/extras/test_tune.py",
    "--prune_after": "tune.py: tests/extras/test_tune.py",
    "--study": "tune.py: tests/extras/test_tune.py (two workers on one study)",
    "--out": "tune.py: tests/extras/test_tune.py",
    "--max_time": "Lightning's time limit; tune.py passes it to every trial",
    "--data.flip": "tests/core/test_strategies.py (clothes mirrored, digits and kana never)",
    "--model.eval_flip": "changes no training: tests/core/test_strategies.py (scores averaged with the mirror's)",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("knobs") / "data" / "MNIST" / "raw").parents[1]


RUNS = itertools.count()
BASELINES: dict[tuple[str, ...], dict] = {}


def train(data: Path, root: Path, flags: list[str]) -> dict:
    """A few steps through the CLI's classes; what the run computed."""
    args = ["--data.data_dir", str(data), *SHORT, *flags]
    cli = RunCLI([*args, "--default_root_dir", str(root / f"run{next(RUNS)}")], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {
        "weights": {k: v.clone() for k, v in cli.model.net.state_dict().items()},
        "steps": cli.trainer.global_step,
        "split": (len(cli.datamodule.train_set), cli.datamodule.val_set.tensors[0].sum(dim=(1, 2)).tolist()),
        "logged": sorted(scalars_by_step(Path(cli.trainer.log_dir), "train/loss")),
    }


def differ(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)
    return a != b


@pytest.mark.parametrize("option", list(KNOBS))
def test_option_changes_what_the_run_computes(option, data, tmp_path):
    recipe, change, measure = KNOBS[option]
    if tuple(recipe) not in BASELINES:
        BASELINES[tuple(recipe)] = train(data, tmp_path, recipe)
    before, after = BASELINES[tuple(recipe)], train(data, tmp_path, [*recipe, *change])
    assert differ(before[measure], after[measure]), f"{' '.join(change)} changed no {measure}"


def test_every_option_the_strategies_page_names_is_proven_or_exempt():
    readme = (REPO / "docs" / "strategies.md").read_text()
    sections = readme[readme.index("## Common recipes") : readme.index("## Data")]
    named = set(re.findall(r"--[a-z_][a-z0-9_.]*[a-z0-9_]", sections))
    assert not named - set(KNOBS) - set(EXEMPT), "options without a test of their effect"

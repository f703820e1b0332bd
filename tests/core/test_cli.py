"""The command line end to end, as a user types it: in subprocesses where the process is the point, else in-process."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from project.run.cli import main
from tests.conftest import (
    FAST_RUN,
    FAST_TRAINER,
    FIGURES,
    NARROW_CNN,
    copy_of_run,
    read_events,
    results,
    run_cli,
    run_folder,
    run_main,
    scalars_by_step,
)


def test_fit_then_test_leaves_a_complete_run_folder(trained):
    root, done = trained
    folder = run_folder(root / "logs")
    assert folder.parent.name == "mnist_cnn" and folder.name == "version_0"
    assert list(folder.glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch=0-val_acc=") for name in checkpoints)
    summary = json.loads((folder / "results.json").read_text())
    assert 0 <= summary["metrics"]["test/acc"] <= 1 and summary["metrics"]["test/loss"] > 0
    assert summary["epochs"] == 1 and summary["global_step"] == 3 and summary["wall_seconds"] > 0
    assert summary["best_checkpoint"] == summary["tested_checkpoint"]
    assert (folder / "checkpoints").samefile(summary["best_checkpoint"].rsplit("/", 1)[0])
    # The table of test metrics is printed, and the resolved config is the default recipe.
    assert "test/acc" in done.stdout
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["net"]["class_path"] == "project.models.CNN"
    assert config["model"]["scheduler"]["class_path"] == "project.optim.OneCycle"
    assert config["trainer"]["max_epochs"] == 1


def test_the_console_names_the_run_folder_and_has_no_warning_of_the_templates_making(mnist_dir, tmp_path):
    # A new interpreter: the warnings raised while the libraries import are part of what the user reads.
    done = run_cli(
        "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *FAST_TRAINER, *FIGURES, fresh=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    named = [line for line in lines if line.startswith("run folder: ")]
    assert named[0] == named[-1] == f"run folder: {run_folder(tmp_path)}" and lines[-1] == named[-1]
    # Lightning's words for what the template used to cause: several checkpoint callbacks asked for "best",
    # and a resumed run's checkpoint folder taken for another.
    assert "multiple `ModelCheckpoint`" not in done.stderr and "dirpath has changed" not in done.stderr
    # Upstream noise the CLI filters by category and module: torch's deprecation of a class Lightning uses.
    assert "LeafSpec" not in done.stderr, "project.cli's FutureWarning filter names a module Lightning moved"
    # Lightning's hint where srun is installed but unused (as on this host): the Trainer's once, not the run layer's
    # checks of SLURM too.
    assert done.stderr.count("The `srun` command is available") <= 1


def test_tensorboard_has_the_metrics_and_real_hparams(trained):
    root, _ = trained
    folder = run_folder(root / "logs")
    scalars, hparams = read_events(folder)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"} <= set(scalars)
    assert "hp_metric" not in scalars  # no -1 placeholder
    assert len(scalars["train/loss"]) == 3  # one point per step
    summary = json.loads((folder / "results.json").read_text())
    assert summary["metrics"]["test/acc"] == pytest.approx(scalars["test/acc"][-1])
    # The HPARAMS tab: the run's hyper-parameters against real metrics.
    assert {m.name.tag for m in hparams.metric_infos} == {"val/acc_best", "test/acc"}
    assert {"batch_size", "dataset", "net/class_path"} <= {h.name for h in hparams.hparam_infos}


def test_test_subcommand_reproduces_the_test_metrics(trained, tmp_path):
    """`test` of a run's checkpoint: the run's data options (from its config.yaml), its folder, its metrics."""
    logs, best = copy_of_run(trained, tmp_path)
    before = results(logs)["metrics"]["test/acc"]
    done = run_main("test", "--ckpt_path", best, "--limit_test_batches", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert results(logs)["metrics"]["test/acc"] == pytest.approx(before)  # run_folder: still one under logs/
    assert results(logs)["tested_checkpoint"] == best


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_other_subcommands_run(trained, subcommand, tmp_path):
    logs, best = copy_of_run(trained, tmp_path)
    done = run_main(subcommand, "--ckpt_path", best, "--limit_val_batches", "1", "--limit_predict_batches", "1",
                   "--enable_progress_bar", "false", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run_folder(logs) == Path(best).parents[1]  # written into the run, no new version
    assert (run_folder(logs) / "predictions.csv").exists() == (subcommand == "predict")
    if subcommand == "predict":  # --limit_predict_batches 1: one batch of 32 (FAST_RUN), the first images in order
        rows = (run_folder(logs) / "predictions.csv").read_text().splitlines()
        assert len(rows) == 1 + 32 and rows[1].startswith("test[0],") and rows[-1].startswith("test[31],")


@pytest.mark.parametrize("prefix", ["", "trainer."])
def test_trainer_flags_flat_and_prefixed(mnist_dir, tmp_path, prefix):
    done = run_main(
        "--data.data_dir",
        str(mnist_dir),
        f"--{prefix}default_root_dir",
        str(tmp_path / "logs"),
        *FAST_TRAINER,
        f"--{prefix}max_epochs",
        "2",
        f"--{prefix}accumulate_grad_batches",
        "3",
        f"--{prefix}precision",
        "bf16-mixed",
        f"--{prefix}devices",
        "1",
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_folder(tmp_path / "logs") / "config.yaml").read_text())["trainer"]
    assert (config["max_epochs"], config["accumulate_grad_batches"]) == (2, 3)
    assert (config["precision"], str(config["devices"])) == ("bf16-mixed", "1")
    summary = results(tmp_path / "logs")
    assert summary["epochs"] == 2 and summary["global_step"] == 2  # 3 batches per epoch, one step per 3


def test_print_config_with_accelerator_gpu_needs_no_gpu():
    done = run_main("--accelerator", "gpu", "--max_epochs", "3", "--print_config")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert config["trainer"]["accelerator"] == "gpu" and config["trainer"]["max_epochs"] == 3


def test_print_config_shows_the_true_default_seed():
    done = run_main("--print_config")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["seed_everything"] == 0  # the seed runs use, not `true`


def test_option_values_may_be_subcommand_words(mnist_dir, tmp_path, monkeypatch):
    """`test`, `fit`, ... are subcommands only as the first word: as values, on the command line or in a config
    file, they are values (a relative folder named `test` here), and the run fits, then tests."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "words.yaml").write_text("trainer:\n  default_root_dir: predict\n")
    assert main(["--config", "words.yaml", "--data.data_dir", str(mnist_dir), *FAST_TRAINER]) == 0
    assert "test/acc" in results(tmp_path / "predict")["metrics"]
    assert main(["--default_root_dir", "test", "--data.data_dir", str(mnist_dir), *FAST_TRAINER]) == 0
    assert "test/acc" in results(tmp_path / "test")["metrics"]


def test_help_shows_the_values_the_run_will_use_for_the_classes_it_is_built_from():
    done = run_main("--help")
    assert done.returncode == 0
    for line in (
        '--accelerator "auto"',
        "--max_epochs 6",  # the recipe's, not the Trainer's None
        "--model.label_smoothing 0.14",
        "--model.optimizer.lr 0.0028",  # the learning rate, findable by name
        "--model.net.channels [32, 64, 128]",  # the CNN's
        "--data.batch_size 128",
        "--callbacks.non_finite.every_n_steps 1",
    ):
        assert line in done.stdout, line
    assert "torch.nn.Identity" not in done.stdout and len(done.stdout.splitlines()) < 400
    # What the data module sets is not shown as the base's 10 classes of 1x28x28 (a picture folder has its own).
    assert "--model.net.input_shape (the data's)" in done.stdout and "--model.num_classes (the data's)" in done.stdout
    # Each line within 118 characters; a long description is cut after a whole word.
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 118 and any(line.endswith(" ...") for line in lines)
    assert "--model.net.hidden_sizes" not in done.stdout  # the MLP is not in this run
    assert run_main("test", "--help").stdout == done.stdout
    mlp = run_main("--config", "configs/mlp.yaml", "--model.optimizer", "SGD", "--help").stdout
    assert "--model.net.hidden_sizes [1024]" in mlp and "--model.net.channels" not in mlp
    assert "--model.optimizer.weight_decay 0 " in mlp  # SGD's own, not the base's AdamW decay


def test_mlp_config_and_optimizer_injection(mnist_dir, tmp_path):
    done = run_main(
        "--config",
        "configs/mlp.yaml",
        "--data.data_dir",
        str(mnist_dir),
        "--default_root_dir",
        str(tmp_path),
        *FAST_RUN,
        "--model.optimizer",
        "SGD",
        "--model.optimizer.lr",
        "0.05",
        "--model.optimizer.momentum",
        "0.9",
        "--model.scheduler",
        "StepLR",
        "--model.scheduler.step_size",
        "1",
        "--model.scheduler.gamma",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    assert run_folder(tmp_path).parent.name == "mnist_mlp"
    # Read back what the run used from its last checkpoint: the optimizer's and the scheduler's own state.
    ckpt = torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["momentum"] == 0.9 and "nesterov" in group  # an SGD state
    assert group["lr"] == pytest.approx(0.025)  # 0.05 halved after the one epoch
    assert ckpt["lr_schedulers"][0]["step_size"] == 1
    assert ckpt["hyper_parameters"]["net"]["class_path"] == "project.models.MLP"


def test_model_net_by_name(mnist_dir, tmp_path):
    done = run_main("--model.net", "MLP", "--model.net.hidden_sizes", "[32]", "--print_config")
    assert done.returncode == 0, done.stderr
    net = yaml.safe_load(done.stdout)["model"]["net"]
    assert net["class_path"] == "project.models.MLP" and net["init_args"]["hidden_sizes"] == [32]


def test_same_seed_same_metrics_and_weights(trained, tmp_path):
    """The shared run used the default seed (Lightning's seed_everything picks 0); --seed_everything 0 repeats
    it exactly, also with two data-loader worker processes."""
    root, _ = trained
    done = run_main("--data.data_dir", str(root / "data"), "--default_root_dir", str(tmp_path), *FAST_TRAINER,
                   "--seed_everything", "0", "--data.num_workers", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, again = results(root / "logs")["metrics"], results(tmp_path)["metrics"]
    assert first == again
    assert set(first) >= {"train/loss", "val/acc", "test/acc"}
    weights = [torch.load(run_folder(r) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for r in (root / "logs", tmp_path)]  # fmt: skip
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_two_cpu_processes_make_one_run(mnist_dir, tmp_path):
    """`--devices 2` on the CPU (DDP, gloo): one run folder, one results.json, metrics over both processes."""
    common = ["--data.data_dir", str(mnist_dir), *FAST_TRAINER, "--limit_test_batches", "1.0"]
    done = run_cli(*common, "--default_root_dir", str(tmp_path / "ddp"), "--devices", "2", "--accelerator", "cpu",
                   "--strategy", "ddp")  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = run_folder(tmp_path / "ddp")
    assert len(list(folder.parent.iterdir())) == 1
    assert sorted(p.name for p in (folder / "checkpoints").iterdir())[1:] == ["last.ckpt"]  # best + last
    # Each process scored half of the 200 test images; the reduced accuracy is the one process's over all 200.
    ddp = results(tmp_path / "ddp")
    alone = run_main("test", *common, "--ckpt_path", ddp["tested_checkpoint"])  # one process, into the same run
    assert alone.returncode == 0, alone.stderr
    one = results(tmp_path / "ddp")
    assert one["wall_seconds"] == ddp["wall_seconds"] and one["test_wall_seconds"] > 0  # the fit's time is kept
    assert ddp["metrics"]["test/acc"] == one["metrics"]["test/acc"]
    assert abs(ddp["metrics"]["test/loss"] - one["metrics"]["test/loss"]) < 1e-5


def test_fast_recipe_runs_on_the_cpu(mnist_dir, tmp_path):
    """configs/fast.yaml is meant for a GPU; with compilation and bf16 off it runs anywhere, data on the device."""
    done = run_main("--config", "configs/fast.yaml", "--model.compile", "false", "--precision", "32",
                   "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *FAST_TRAINER)  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_folder(tmp_path) / "config.yaml").read_text())
    assert config["data"]["init_args"]["on_device"] is True and config["model"]["channels_last"] is True
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.01  # the one-cycle peak
    assert "test/acc" in results(tmp_path)["metrics"]


def test_train_loss_is_logged_on_the_steps_the_logger_writes(mnist_dir, tmp_path):
    """training_step calls self.log only every log_every_n_steps steps (ImageClassifier.logger_writes_this_step):
    TensorBoard gets the same points Lightning writes when it is called on every step."""
    done = run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *FAST_TRAINER,
                   "--limit_train_batches", "7", "--log_every_n_steps", "3", "--max_epochs", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    changed = "ImageClassifier.logger_writes_this_step no longer follows Lightning's rule of when logs are written"
    assert sorted(scalars_by_step(run_folder(tmp_path), "lr-AdamW/default")) == [2, 5, 8, 11]  # Lightning's own cadence
    assert sorted(scalars_by_step(run_folder(tmp_path), "train/loss")) == [2, 5, 8, 11], changed


def test_callbacks_that_are_off_are_not_registered(mnist_dir, tmp_path):
    """Lightning calls every registered callback's hooks on every step: one that is switched off is left out."""
    from project.extras.non_finite import StopOnNonFiniteLoss
    from project.extras.pictures import GradientNorm, ModelGraph, WeightHistograms
    from project.run.cli import RunCLI
    from project.run.last_checkpoint import StepCheckpoint

    def registered(*flags: str) -> set[type]:
        args = ["--data.data_dir", str(mnist_dir), *flags]
        return {type(c) for c in RunCLI([*args, "--default_root_dir", str(tmp_path)], run=False).trainer.callbacks}

    default = registered()
    assert not default & {GradientNorm, WeightHistograms, ModelGraph, StepCheckpoint}  # off by default
    assert StopOnNonFiniteLoss in default
    switched = registered(
        "--callbacks.histograms",
        "WeightHistograms",
        "--callbacks.non_finite",
        "null",
        "--callbacks.step_checkpoint",
        "StepCheckpoint",
        "--callbacks.step_checkpoint.every_n_steps",
        "5",
    )
    assert {WeightHistograms, StepCheckpoint} <= switched and StopOnNonFiniteLoss not in switched


def test_every_default_callback_can_be_switched_off_and_a_config_adds_its_own(mnist_dir, tmp_path):
    """`--callbacks.<name> null` (flag or config file) leaves each default callback out; a config's own
    trainer.callbacks come beside the template's."""
    from lightning.pytorch.callbacks import EarlyStopping

    from project.run.cli import RunCLI

    def registered(*flags: str) -> list[str]:
        args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path)]
        return [type(c).__name__ for c in RunCLI([*args, *flags], run=False).trainer.callbacks]

    default = registered()
    listed = yaml.safe_load(RunCLI.base_configs[-1].read_text())["callbacks"]
    made = {key: spec["class_path"].rsplit(".", 1)[-1] for key, spec in listed.items() if spec}
    assert set(made.values()) <= set(default)
    for key, name in made.items():
        assert name not in registered(f"--callbacks.{key}", "null"), key
    own = tmp_path / "own.yaml"
    own.write_text("trainer:\n  callbacks:\n    - class_path: EarlyStopping\n      init_args: {monitor: val/acc}\n"
                   "callbacks:\n  preemption: null\n")  # fmt: skip
    with_own = registered("--config", str(own))
    assert EarlyStopping.__name__ in with_own and "Preemption" not in with_own
    assert set(with_own) == set(default) - {"Preemption"} | {"EarlyStopping"}


@pytest.mark.parametrize("subcommand", [[], ["fit"]])
def test_fast_dev_run_is_a_smoke_test_that_writes_nothing(mnist_dir, tmp_path, subcommand):
    """Lightning's --fast_dev_run (one batch of each stage, its loggers and checkpoints off): exit 0, no run folder,
    no results.json, no 'run folder' line."""
    done = run_main(*subcommand, "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"),
                    "--data.val_size", "100", "--fast_dev_run", "true", "--enable_progress_bar", "false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "run folder" not in done.stderr and not (tmp_path / "logs").exists()


def test_a_batch_limit_of_1_is_one_batch_and_1_0_all_batches(mnist_dir, tmp_path):
    """As in Lightning's Trainer(limit_val_batches=1): a whole number counts batches, a fraction is a share. Lightning
    types these options float | int, which jsonargparse read as 1.0 (all batches) for 1."""
    from project.run.cli import RunCLI

    (tmp_path / "one.yaml").write_text("trainer:\n  limit_test_batches: 1\n")
    args = ["--data.data_dir", str(mnist_dir), "--limit_val_batches", "1", "--limit_train_batches=1.0", "--config",
            str(tmp_path / "one.yaml"), "--default_root_dir", str(tmp_path)]  # fmt: skip
    cli = RunCLI(args, run=False)
    limits = (cli.trainer.limit_val_batches, cli.trainer.limit_train_batches, cli.trainer.limit_test_batches)
    assert [(value, type(value)) for value in limits] == [(1, int), (1.0, float), (1, int)]


def test_predict_with_fast_dev_run_prints_its_table_and_writes_nothing(trained, tmp_path):
    logs, best = copy_of_run(trained, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    done = run_main("predict", "--ckpt_path", best, "--fast_dev_run", "true", "--enable_progress_bar", "false",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test[0]" in done.stdout and "wrote" not in done.stdout
    assert sorted(tmp_path.rglob("*")) == before


def test_help_after_a_switched_class_shows_its_options_whatever_it_requires(tmp_path):
    """`--data ImageFolderDataModule --help`: its options, data_dir as <required> (it stopped at the missing
    data_dir); without --help the missing option is still one line."""
    shown = run_main("--data", "ImageFolderDataModule", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert '--data.data_dir "<required>"' in shown.stdout and "--data.image_size null" in shown.stdout
    refused = run_main("--data", "ImageFolderDataModule", "--default_root_dir", str(tmp_path / "logs"))
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == "error: --data: the following arguments are required: data_dir"


@pytest.mark.parametrize(("processes", "logged"), [(1, [3, 7]), pytest.param(2, [1, 3], marks=pytest.mark.slow)])
def test_an_epoch_shorter_than_the_logging_interval_still_logs_a_curve(mnist_dir, tmp_path, processes, logged):
    """4 steps an epoch (500 images in batches of 128; 2 in each of two DDP processes) under the default
    log_every_n_steps 50: train/loss every epoch's last step, not once a run (or never), no warning from Lightning."""
    done = run_cli("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *NARROW_CNN,
                   "--max_epochs", "2", "--limit_val_batches", "1", "--devices", str(processes), "--accelerator", "cpu",
                   "--limit_test_batches", "1", "--enable_progress_bar", "false", "--data.val_size", "100")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "logging interval" not in done.stderr
    assert sorted(scalars_by_step(run_folder(tmp_path), "train/loss")) == logged


# --conf: jsonargparse warns that abbreviations go in its version 5 (a DeprecationWarning, the user's to read).
@pytest.mark.parametrize("flag", ["--config", "-c", pytest.param("--conf", marks=pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"))])  # fmt: skip
def test_a_config_that_switches_the_optimizer_gives_it_its_own_defaults_however_it_is_named(flag):
    """configs/optimizers/sgd.yaml after the base's AdamW: SGD's own weight decay (0), not AdamW's, with the
    option written in full, short, or abbreviated as argparse allows."""
    done = run_main(flag, "configs/optimizers/sgd.yaml", "--print_config")
    assert done.returncode == 0, done.stderr
    optimizer = yaml.safe_load(done.stdout)["model"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["weight_decay"] == 0

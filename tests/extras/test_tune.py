"""tune.py: an Optuna study over train.py runs that resumes, and a best recipe train.py takes as it is."""

import json
import subprocess
import sys

import optuna
import pytest
import yaml

import tune
from tests.conftest import FAST_RUN, REPO, results, run_folder, run_main


@pytest.mark.slow
def test_three_trials_write_a_usable_recipe_and_the_study_resumes(mnist_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["--storage", storage, "--out", str(tmp_path / "tune"), "--net", "MLP", *FAST_RUN,
              "--data.data_dir", str(mnist_dir), "--max_epochs", "2"]  # fmt: skip
    assert tune.main(["--trials", "3", *common]) == 0  # in this process: the process is not the point
    study = optuna.load_study(study_name="mnist", storage=storage)
    assert len(study.trials) == 3
    best = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    assert best["model"]["optimizer"]["init_args"]["lr"] == study.best_params["lr"]
    assert best["data"]["init_args"]["batch_size"] == study.best_params["batch_size"]
    assert best["data"]["init_args"]["data_dir"] == str(mnist_dir)  # what train.py needs, data included
    assert best["trainer"]["max_epochs"] == 2 and "default_root_dir" not in best["trainer"]

    # Asked for 4 in all, the same study runs exactly one more trial.
    assert tune.main(["--trials", "4", *common]) == 0
    assert len(optuna.load_study(study_name="mnist", storage=storage).trials) == 4

    # The recipe trains as it is: the data options come with it.
    done = run_main("--config", str(tmp_path / "tune" / "best.yaml"), "--default_root_dir", str(tmp_path / "train"),
                   "--limit_train_batches", "3", "--limit_val_batches", "1", "--limit_test_batches", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_folder(tmp_path / "train") / "config.yaml").read_text())
    assert config["model"]["net"]["class_path"] == "project.models.MLP"
    assert config["model"]["optimizer"]["init_args"]["lr"] == study.best_params["lr"]
    assert config["model"]["scheduler"] is None
    assert "test/acc" in results(tmp_path / "train")["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_share_one_study(database, mnist_dir, tmp_path, request):
    if database == "sqlite":
        storage = f"sqlite:///{tmp_path / 'study.db'}"
    else:  # a real PostgreSQL server, started for the tests (skipped where Debian's postgresql is missing)
        storage = request.getfixturevalue("postgres").create_database("study")
    common = ["--trials", "4", "--storage", storage, "--out", str(tmp_path / "tune"), "--net", "MLP", *FAST_RUN,
              "--data.data_dir", str(mnist_dir)]  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, "tune.py", *common], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err for _, err in outputs]

    trials = optuna.load_study(study_name="mnist", storage=storage).trials
    # Nothing lost: every trial finished, and each has its own run; nothing repeated: numbers and values differ.
    # Both workers stop at the total, except that the trial the other is running when it is reached still ends.
    assert 4 <= len(trials) <= 5
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    for trial in trials:
        assert run_folder(tmp_path / "tune" / f"trial_{trial.number}").parent.name == "mnist_mlp"
    # best.yaml is written once, by the worker that finished the last trial, and train.py takes it.
    assert sum("wrote " in out for out, _ in outputs) == 1, [out for out, _ in outputs]
    trained = run_main("--config", str(tmp_path / "tune" / "best.yaml"), *FAST_RUN,
                      "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "best"))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    # And the two really ran side by side: some trials overlapped in time.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_postgresql_storage_without_its_driver_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    assert tune.main(["--storage", "postgresql://postgres@127.0.0.1:1/db", "--out", str(tmp_path / "tune")]) == 2
    assert not (tmp_path / "tune").exists()  # nothing made before the study opens
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: --storage postgresql://...: the database driver")
    assert 'pip install -e ".[postgres]"' in error


def test_best_yaml_is_the_trials_own_config_without_where_it_ran(tmp_path):
    """What train.py needs to train the best trial again: its data options, epochs and seed, not its folders."""
    run = tmp_path / "trial_3" / "mnist_mlp" / "version_0"
    run.mkdir(parents=True)
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "trial_3"), "logger": {"class_path": "TensorBoardLogger"},
                    "enable_progress_bar": False, "max_epochs": 2, "accelerator": "auto"},
        "model": {"net": {"class_path": "project.models.MLP"}, "optimizer": {"init_args": {"lr": 0.01}}},
        "data": {"class_path": "project.data.MNISTDataModule", "init_args": {"data_dir": "/d", "batch_size": 64}},
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    trial = optuna.trial.create_trial(params={}, distributions={}, value=0.9)
    recipe = tune.best_recipe(tmp_path / "trial_3", trial, "MLP")
    assert recipe["trainer"] == {"max_epochs": 2}  # where it ran and Trainer defaults left out
    assert recipe["data"] == config["data"] and recipe["model"] == config["model"] and recipe["seed_everything"] == 0


def test_a_search_space_file_sets_train_options_and_the_best_trials_are_tabled(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "model.label_smoothing: {low: 0.0, high: 0.2}\nmodel.net.class_path: project.models.CNN\n"
        "data.batch_size: [64, 128]\ntrainer.max_epochs: {low: 2, high: 8}\n"
        "model.net.init_args.channels: [[8], [8, 16]]\n"
        "model.optimizer.init_args.lr: {low: 1e-4, high: 1e-1, log: true}\n"
    )
    space = tune.read_space(path)
    values = {"model.label_smoothing": 0.1, "data.batch_size": 64, "trainer.max_epochs": 3,
              "model.optimizer.init_args.lr": 0.01, "model.net.init_args.channels": "[8, 16]"}  # fmt: skip
    assert tune.space_recipe(optuna.trial.FixedTrial(values), space) == {
        "model": {"label_smoothing": 0.1,
                  "net": {"class_path": "project.models.CNN", "init_args": {"channels": [8, 16]}},
                  "optimizer": {"init_args": {"lr": 0.01}}},
        "data": {"batch_size": 64}, "trainer": {"max_epochs": 3},
    }  # fmt: skip
    # The kinds Optuna is asked for: a float range, choices, an int range (both ends whole), a log range.
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: len(str(tune.space_recipe(trial, space))) / 1000, n_trials=3)
    distributions = study.trials[0].distributions
    assert isinstance(distributions["trainer.max_epochs"], optuna.distributions.IntDistribution)
    assert distributions["model.optimizer.init_args.lr"].log and distributions["data.batch_size"].choices == (64, 128)

    # The table lists finished trials best first, with the values each tried.
    study = optuna.create_study(direction="maximize")
    dist = {"data.batch_size": optuna.distributions.CategoricalDistribution([64, 128])}
    for value, batch in ((0.5, 64), (0.9, 128), (0.7, 64)):
        study.add_trial(optuna.trial.create_trial(params={"data.batch_size": batch}, distributions=dist, value=value))
    study.add_trial(optuna.trial.create_trial(params={"data.batch_size": 64}, distributions=dist, value=0.95,
                                              state=optuna.trial.TrialState.PRUNED))  # fmt: skip
    table = tune.best_trials_table(study, top=2).splitlines()  # pruned trials are left out
    assert table[0] == "| trial | val/acc_best | minutes | batch_size |"
    assert [row.split("|")[1:3] for row in table[2:]] == [[" 1 ", " 0.9000 "], [" 2 ", " 0.7000 "]]
    assert table[2].endswith("| 128 |")


@pytest.mark.parametrize(
    ("text", "says"),
    [("lr: {low: 0.1}\n", "'lr' needs choices [a, b], a range {low: .., high: ..}, a value"),
     ("- a\n", "expected a mapping of train.py options"), ("lr: [\n", "cannot read it")],
)  # fmt: skip
def test_a_bad_search_space_file_is_one_line_and_writes_nothing(tmp_path, capsys, text, says):
    (tmp_path / "space.yaml").write_text(text)
    out = tmp_path / "tune"
    assert tune.main(["--space", str(tmp_path / "space.yaml"), "--out", str(out), "--storage", "sqlite:///x/y.db"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: --space {tmp_path / 'space.yaml'}: ") and says in error
    assert not out.exists()


def test_no_trial_is_pruned_before_prune_after_epochs(tmp_path):
    study = tune.open_study("s", f"sqlite:///{tmp_path / 's.db'}", prune_after=2)
    for _ in range(2):  # the median pruner's two start-up trials, at 0.9 every epoch
        trial = study.ask()
        for epoch in range(4):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)
    trial, verdicts = study.ask(), []
    for epoch in range(4):  # far behind from the first epoch on
        trial.report(0.1, epoch)
        verdicts.append(trial.should_prune())
    assert verdicts == [False, False, True, True]


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_the_search_spaces_that_found_the_recipes_are_valid(name, tmp_path):
    """configs/search/*.yaml: every key a train.py option, and a trial's values are what train.py then runs with."""
    from project.run.cli import RunCLI

    space = tune.read_space(REPO / "configs" / "search" / f"{name}.yaml")
    trial = optuna.create_study().ask()
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tune.space_recipe(trial, space)))
    recipe = ["--config", str(REPO / "configs" / f"{name}.yaml"), "--config", str(path)]
    config = RunCLI([*recipe, "--default_root_dir", str(tmp_path)], run=False).config  # its run folder there
    config = {key.replace("data.init_args.", "data."): value for key, value in config.items()}  # flags' spelling
    assert trial.params and all(
        config[option] == (json.loads(value) if isinstance(value, str) and value.startswith("[") else value)
        for option, value in trial.params.items()
    ), trial.params
    fixed = {option: value for option, value in space.items() if not isinstance(value, list | dict)}
    assert all(config[option] == value for option, value in fixed.items()), fixed

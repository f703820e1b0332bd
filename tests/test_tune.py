"""tune.py: an Optuna study over train.py runs that resumes, and a best recipe train.py takes as it is."""

import subprocess
import sys

import optuna
import pytest
import yaml

from tests.conftest import FAST_TRAINER, REPO, results, run_cli, run_folder


def tune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tune.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_three_trials_write_a_usable_recipe_and_the_study_resumes(mnist_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["--storage", storage, "--out", str(tmp_path / "tune"), "--net", "MLP", *FAST_TRAINER,
              "--data.data_dir", str(mnist_dir), "--max_epochs", "2"]  # fmt: skip
    done = tune("--trials", "3", *common)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="mnist", storage=storage)
    assert len(study.trials) == 3
    best = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    assert best["model"]["optimizer"]["init_args"]["lr"] == study.best_params["lr"]
    assert best["data"]["batch_size"] == study.best_params["batch_size"]

    # Asked for 4 in all, the same study runs exactly one more trial.
    done = tune("--trials", "4", *common)
    assert done.returncode == 0, done.stderr
    assert len(optuna.load_study(study_name="mnist", storage=storage).trials) == 4

    # The recipe trains as it is.
    done = run_cli("--config", str(tmp_path / "tune" / "best.yaml"), "--data.data_dir", str(mnist_dir),
                   "--default_root_dir", str(tmp_path / "train"), *FAST_TRAINER)  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_folder(tmp_path / "train") / "config.yaml").read_text())
    assert config["model"]["net"]["class_path"] == "project.models.MLP"
    assert config["model"]["optimizer"]["init_args"]["lr"] == study.best_params["lr"]
    assert config["model"]["scheduler"] is None
    assert "test/acc" in results(tmp_path / "train")["metrics"]

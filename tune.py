"""Hyper-parameter search with Optuna: learning rate, optimizer, batch size, dropout and width.

    python tune.py --trials 20 --max_epochs 2                 # any other option of train.py passes through
    python tune.py --storage postgresql://user:pass@host/db   # one study shared by several machines
    python tune.py --space configs/search/cnn.yaml --max_time 00:00:04:00   # your own space, 4 min per trial

Every trial is a train.py run validated each epoch. The built-in space tries a constant learning rate (so
that "learning rate" means one number); --space FILE searches what the file names instead, on the recipe the
other options give (each key a train.py option, each value a list to choose from, a range {low, high, log} or
a value that is set, not searched). A Trainer option such as --max_time passes through and bounds every trial.
Optuna's median pruner stops trials whose val/acc falls behind (from epoch --prune_after on: early epochs
of a one-cycle schedule say little of the end), through its Lightning callback.
The study lives in SQLite under logs/ by default, so an interrupted search resumes where it stopped: --trials
is the total the study should reach. A trial cut short (Ctrl-C: exit 130, SIGTERM: 143) is marked failed and its
values run again first; a trial whose worker died is marked so by Optuna's heartbeat after a minute.
Several workers may run at once on one study (same --study and
--storage): each asks the study for new trials until the total is reached, so none is repeated or lost (the
trials still running when the total is reached finish: up to one extra per extra worker). Each trial is a run
of its own, logs/tune/trial_N/. At the end the best trials are printed as a table, and the best is written as
a YAML recipe that `python train.py --config logs/tune/best.yaml` takes as it is.
"""

import project  # noqa: F401 (first: a Ctrl-C while the libraries below load ends in one line, project/__init__.py)

# isort: split
import argparse
import inspect
import json
import logging
import random
import sys
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
import yaml
from lightning import Trainer
from optuna_integration import PyTorchLightningPruningCallback

from project.cli import ClassifierCLI, explain_failure
from project.errors import UserError, fail
from project.extras.atomic import write_atomically

HEARTBEAT = 20  # seconds
OPTIMIZERS = {"Adam": {}, "AdamW": {"weight_decay": 0.01}, "SGD": {"momentum": 0.9, "nesterov": True}}


def trial_recipe(trial: optuna.Trial, net: str) -> dict:
    """The values this trial tries, as the config sections of a train.py recipe."""
    optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    width_key = "hidden_sizes" if net == "MLP" else "hidden"
    width = trial.suggest_categorical("width", [64, 128, 256, 512])
    return {
        "model": {
            "optimizer": {"class_path": f"torch.optim.{optimizer}", "init_args": {"lr": lr, **OPTIMIZERS[optimizer]}},
            "scheduler": None,
            "net": {
                "class_path": f"project.models.{net}",
                "init_args": {"dropout": trial.suggest_float("dropout", 0.0, 0.5),
                              width_key: [width] if net == "MLP" else width},
            },
        },
        "data": {"batch_size": trial.suggest_categorical("batch_size", [64, 128, 256])},
    }  # fmt: skip


def read_space(path: Path) -> dict:
    """A search space from a YAML file: {train.py option: [choices], {low, high, log} or a value to set}."""
    try:
        space = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--space {path}: cannot read it ({error})") from error
    if not isinstance(space, dict) or not space:
        raise UserError(f"--space {path}: expected a mapping of train.py options to choices or ranges")
    for option, values in space.items():
        if values == [] or (isinstance(values, dict) and not {"low", "high"} <= values.keys()):
            raise UserError(f"--space {path}: '{option}' needs choices [a, b], a range {{low: .., high: ..}}, a value")
        if isinstance(values, dict):  # YAML reads 1e-4 (no dot) as text
            try:
                values.update({end: float(values[end]) for end in ("low", "high") if isinstance(values[end], str)})
            except ValueError as error:
                raise UserError(f"--space {path}: '{option}': {error}") from error
    return space


def space_recipe(trial: optuna.Trial, space: dict) -> dict:
    """The values this trial tries from a search space (read_space), as the config sections they belong to."""
    recipe: dict = {}
    for option, values in space.items():
        if isinstance(values, list):  # Optuna's choices are plain values: lists (widths) go in as JSON text
            coded = [json.dumps(value) if isinstance(value, list | dict) else value for value in values]
            value = values[coded.index(trial.suggest_categorical(option, coded))]
        elif not isinstance(values, dict):
            value = values  # set, not searched
        else:
            whole = isinstance(values["low"], int) and isinstance(values["high"], int)
            suggest = trial.suggest_int if whole else trial.suggest_float
            value = suggest(option, values["low"], values["high"], log=values.get("log", False))
        *sections, name = option.split(".")
        node = recipe
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return recipe


def best_trials_table(study: optuna.Study, top: int = 5) -> str:
    """The study's best completed trials as a Markdown table: value, minutes and the values tried (each column
    named by the last part of its option where that is unique)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done = sorted(done, key=lambda t: t.value, reverse=True)[:top]
    names = list(dict.fromkeys(name for t in done for name in t.params))
    short = [name.rsplit(".", 1)[-1] for name in names]
    heads = [s if short.count(s) == 1 else name for s, name in zip(short, names, strict=True)]
    lines = ["| trial | val/acc_best | minutes | " + " | ".join(heads) + " |", "|---" * (3 + len(names)) + "|"]
    for t in done:
        values = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (t.params.get(n, "") for n in names)]
        minutes = t.duration.total_seconds() / 60 if t.duration else float("nan")
        lines.append(f"| {t.number} | {t.value:.4f} | {minutes:.1f} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def objective(trial: optuna.Trial, recipe: dict, train_args: list[str], folder: Path) -> float:
    # A folder per trial: workers running at once would otherwise race for the same logs version_N.
    run_root = folder / f"trial_{trial.number}"
    run_root.mkdir(parents=True, exist_ok=True)
    path = run_root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    args = [*train_args, "--config", str(path), "--default_root_dir", str(run_root)]
    cli = ClassifierCLI(args, run=False)
    cli.trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val/acc"))
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except SystemExit as stop:  # Ctrl-C or SIGTERM, saved and stopped: Optuna marks a KeyboardInterrupt failed
        raise KeyboardInterrupt(stop.code) from stop
    return float(cli.trainer.callback_metrics["val/acc_best"])


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial cut short (interrupted, or its worker gone) runs again with the same values, before new ones."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if trial.params not in [t.params for t in waiting]:
        study.enqueue_trial(trial.params)


class WithoutUserErrorTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; a mistake in the options gets its one line from main()."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UserError))


def open_study(name: str, url: str, prune_after: int = 0, attempts: int = 5) -> optuna.Study:
    """Create the study, or join it if another worker has. Workers starting at the same moment race to create
    the database's tables: the loser's insert fails (IntegrityError), and a second try finds them made."""
    for attempt in range(attempts):
        try:
            # Workers sharing one SQLite file wait for each other's writes instead of failing after 5 s.
            connect = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
            # A heartbeat per running trial: a trial whose worker died (killed, its machine gone) is marked failed
            # after the grace period and tried again, instead of counting as running forever.
            with warnings.catch_warnings():  # Optuna's heartbeat is marked experimental: by its category
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=connect, heartbeat_interval=HEARTBEAT,
                                                     grace_period=3 * HEARTBEAT,
                                                     heartbeat_stale_trial_callback=retry)  # fmt: skip
            return optuna.create_study(
                study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=prune_after),
            )  # fmt: skip
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())  # apart, so that the next tries do not collide again


def main(argv: list[str] | None = None) -> int:
    """tune.py's command line; an error ends with one line (--debug: its traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return search([word for word in argv if word != "--debug"])
    except Exception as error:
        if "--debug" in argv:
            raise
        return fail(explain_failure(error))


def search(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="total number of trials the study should reach")
    parser.add_argument("--study", default="mnist", help="study name (several workers on one name share it)")
    parser.add_argument("--storage", default="sqlite:///logs/optuna.db", help="any database URL Optuna takes")
    parser.add_argument("--net", choices=["CNN", "MLP"], default="CNN")
    parser.add_argument("--out", type=Path, default=Path("logs/tune"), help="trial recipes and best.yaml go here")
    parser.add_argument("--space", type=Path, help="YAML search space replacing the built-in one (see above)")
    parser.add_argument("--prune_after", type=int, default=0, help="epochs every trial runs before it may be pruned")
    args, train_args = parser.parse_known_args(argv)
    try:
        space = read_space(args.space) if args.space else None
    except UserError as error:
        return fail(str(error))
    if args.storage.startswith("sqlite:///"):
        Path(args.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    train_args = ["--enable_progress_bar", "false", *train_args]
    scheme = args.storage.split(":")[0]
    try:
        study = open_study(args.study, args.storage, args.prune_after)
    except ImportError as error:  # SQLAlchemy found no driver for the database (Optuna re-raises it)
        extra = 'pip install -e ".[postgres]"' if scheme.startswith("postgresql") else "install its Python driver"
        return fail(
            f"--storage {scheme}://...: the database driver is not installed ({error.__cause__ or error}); {extra}"
        )
    except sqlalchemy.exc.SQLAlchemyError as error:  # nothing listens, wrong password, no such database
        reason = " ".join(str(getattr(error, "orig", None) or error).split())[:200]
        return fail(f"--storage {scheme}://...: cannot open the study's database ({reason}); check the URL and "
                    "that the database server runs")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for handler in logging.getLogger("optuna").handlers:  # a filter on the handler sees its children's records
        handler.addFilter(WithoutUserErrorTraceback())
    # Counted in the shared study after every trial, so that all workers together stop at --trials. Only
    # finished trials count: one left "running" by a killed worker is made up for.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    enough = optuna.study.MaxTrialsCallback(args.trials, states=finished)
    ran: set[int] = set()  # the numbers of the trials this worker ran

    def run_trial(trial: optuna.Trial) -> float:
        ran.add(trial.number)
        try:
            recipe = space_recipe(trial, space) if space is not None else trial_recipe(trial, args.net)
        except ValueError as error:  # Optuna: a name the study already searched, over other values
            raise UserError(f"the study '{args.study}' was searched over another space ({error}); give another "
                            "--study name for this one") from error  # fmt: skip
        return objective(trial, recipe, train_args, args.out)

    try:
        if len(study.get_trials(states=finished)) < args.trials:
            study.optimize(run_trial, callbacks=[enough], catch=())
    except UserError as error:
        return fail(str(error))
    except KeyboardInterrupt as stop:  # Optuna has marked the trial failed; it runs again first next time
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if trial.number in ran:
                retry(study, trial)
        print(
            f"interrupted: the trial cut short runs again first; `python tune.py` with the same options goes on "
            f"(the study has {len(study.get_trials(states=finished))} of {args.trials} trials)",
            file=sys.stderr,
        )
        return stop.args[0] if stop.args and isinstance(stop.args[0], int) else 130
    best = study.best_trial
    print(best_trials_table(study))
    print(f"best trial {best.number}: val/acc_best {best.value:.4f} with {best.params}")
    if writes_the_summary(study, ran, args.out / "best.yaml"):
        header = f"# Best trial of study '{args.study}': trial {best.number}, val/acc_best {best.value:.4f}\n"
        recipe = best_recipe(args.out / f"trial_{best.number}", best, args.net, space)
        write_atomically(args.out / "best.yaml", header + yaml.safe_dump(recipe, sort_keys=False))
        print(f"wrote {args.out / 'best.yaml'}; train with: python train.py --config {args.out / 'best.yaml'}")
    else:
        print(f"{args.out / 'best.yaml'} is written by the worker that finishes the study's last trial")
    return 0


# Where a trial ran, how it showed progress and the search's time bound (--max_time): not part of what train.py
# needs to train it again.
RUN_PLACE = ("default_root_dir", "logger", "callbacks", "enable_progress_bar", "max_time")


def best_recipe(trial_folder: Path, best: optuna.trial.FrozenTrial, net: str, space: dict | None = None) -> dict:
    """What train.py needs to train the best trial again: the configuration the trial ran with (data options,
    epochs and seed included, as its config.yaml holds them), without where it ran; Trainer options only where
    they differ from the Trainer's defaults. A trial whose folder is gone (another machine's) gives the values
    tried, on the default recipe."""
    saved = sorted(trial_folder.glob("*/version_*/config.yaml"))
    if not saved:
        fixed = optuna.trial.FixedTrial(best.params)
        return space_recipe(fixed, space) if space is not None else trial_recipe(fixed, net)
    config = yaml.safe_load(saved[-1].read_text())
    defaults = {name: p.default for name, p in inspect.signature(Trainer).parameters.items()}
    trainer = {key: value for key, value in config["trainer"].items() if key not in RUN_PLACE}
    trainer = {key: value for key, value in trainer.items() if key not in defaults or value != defaults[key]}
    return {"seed_everything": config["seed_everything"], "trainer": trainer, "model": config["model"],
            "data": config["data"]}  # fmt: skip


def writes_the_summary(study: optuna.Study, ran: set[int], path: Path) -> bool:
    """Whether this worker writes best.yaml: the one that finished the study's last trial, once no trial runs
    (several workers on one study would otherwise each write it); a worker that ran no trial (the study was
    complete when it started) only where no best.yaml is yet."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        return False
    finished = [t for t in trials if t.datetime_complete is not None]
    if not ran or not finished:
        return not path.exists()
    return max(finished, key=lambda t: t.datetime_complete).number in ran


if __name__ == "__main__":
    sys.exit(main())

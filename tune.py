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
is the total the study should reach. A trial cut short (Ctrl-C: exit 130, SIGTERM: 143, SIGHUP: 129) is marked
failed and its values run again first; so is a trial whose worker died (killed, its machine gone), once a later run
finds it: at once where that worker ran on the same machine, else after a minute without Optuna's heartbeat.
Several workers may run at once on one study (same --study and
--storage): each asks the study for new trials until the total is reached, so none is repeated or lost (the
trials still running when the total is reached finish: up to one extra per extra worker). Each trial is a run
of its own, logs/tune/trial_N/. At the end the best trials are printed as a table, and the best is written as
a YAML recipe that `python train.py --config logs/tune/best.yaml` takes as it is.
"""

import signal

from project.run import signals  # first: a Ctrl-C while the libraries below load ends in one line

if __name__ == "__main__":  # not on import: an importer's signals are its own
    signals.note_stop_signals()  # SIGTERM, SIGUSR1 and SIGHUP noted while the libraries load, acted on by main()

# isort: split
import argparse
import errno
import inspect
import json
import logging
import os
import random
import shutil
import sqlite3
import sys
import time
import warnings
from pathlib import Path

import yaml
from lightning import Trainer

from project.errors import UserError
from project.files import write_atomically
from project.run.cli import RunCLI
from project.run.errors import explain_failure, fail, missing_extra
from project.run.options import expand
from project.run.signals import DISK_FAULTS, Stopped, stop_now

try:  # the [tune] extra: a plain `pip install -e .` trains, and tune.py says what it needs
    import optuna
    import sqlalchemy
    from optuna_integration import PyTorchLightningPruningCallback
except ModuleNotFoundError as missing:
    sys.exit(fail(missing_extra(missing, "tune")))

HEARTBEAT = 20  # seconds
CONNECT_SECONDS = 5  # the longest wait for a database server's answer to a connection
# Counted in the shared study after every trial, so that all workers together stop at --trials. Only finished
# trials count: one left "running" by a killed worker is made up for.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
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
            low, high = values["low"], values["high"]
            if not low <= high or (values.get("log") and low <= 0):
                need = "low above 0 for a log range" if low <= high else "low <= high"
                raise UserError(f"--space {path}: '{option}' has low {low} and high {high}; it needs {need}")
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


class StopSignals:
    """Ctrl-C, SIGTERM, SIGHUP (the terminal closed) and SIGUSR1 (a cluster's notice) during the search. Outside a
    trial's training they are noted and acted on where no write of Optuna's is cut in half: before the trial trains
    (it fails and runs again first) or after it (the search stops there). While a trial trains they go to its run's
    own handler (project.extras.preemption: it saves and stops at the next step). A second Ctrl-C stops at once."""

    SIGNALS = (signal.SIGINT, *signals.STOP_SIGNALS)

    def __init__(self) -> None:
        self.received = list(signals.EARLY_STOPS)  # noted while tune.py loaded
        signals.EARLY_STOPS.clear()
        self.trial_run = None  # the training trial's handler
        self.previous = {stop: signal.getsignal(stop) for stop in self.SIGNALS}
        self.install()

    def install(self) -> None:
        for stop in self.SIGNALS:
            signal.signal(stop, self.notice)

    def restore(self) -> None:
        for stop, handler in self.previous.items():
            signal.signal(stop, handler)

    def notice(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and signal.SIGINT in self.received:
            raise KeyboardInterrupt
        self.received.append(signum)
        if self.trial_run is not None:
            self.trial_run(signum, frame)

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt(128 + self.received[0])


def objective(trial: optuna.Trial, recipe: dict, train_args: list[str], folder: Path, stops: StopSignals) -> float:
    # A folder per trial: workers running at once would otherwise race for the same logs version_N.
    run_root = folder / f"trial_{trial.number}"
    try:
        write_atomically(run_root / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
        args = [*train_args, "--config", str(run_root / "recipe.yaml"), "--default_root_dir", str(run_root)]
        cli = RunCLI(args, run=False)
        cli.trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val/acc"))
        run = next((c for c in cli.trainer.callbacks if callable(getattr(c, "notice", None))), None)
        stops.trial_run = run.notice if run is not None else stop_now  # stop_now: the preemption callback is off
        if run is not None:
            run.advises = False  # its "--ckpt_path last goes on": a stopped trial runs again from its start
        try:
            stops.check()  # a stop while the run was built: the trial ends before it trains
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        except SystemExit as stop:  # saved and stopped (Lightning's end at a second Ctrl-C: status 1)
            code = stop.code if isinstance(stop.code, int) else 128 + signal.SIGTERM  # Lightning's SIGTERM: None
            raise KeyboardInterrupt(130 if isinstance(stop.__context__, KeyboardInterrupt) else code) from stop
        finally:
            stops.trial_run = None
            stops.install()  # the run's handlers end with it
        if run is not None and run.received:  # after the run's last safe point: this trial is done, the search stops
            stops.received.append(run.received)
        return float(cli.trainer.callback_metrics["val/acc_best"])
    except BaseException:
        # A trial that wrote nothing but its recipe (a full disk, a stop before it trained) leaves no folder: its
        # values run again as another trial.
        if not any(path.is_file() and path.name != "recipe.yaml" for path in run_root.rglob("*")):
            shutil.rmtree(run_root, ignore_errors=True)
        raise


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial cut short (interrupted, or its worker gone) runs again with the same values, before new ones."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if trial.params and trial.params not in [t.system_attrs.get("fixed_params") for t in waiting]:
        study.enqueue_trial(trial.params)


def this_worker() -> dict:
    """The process running a trial, as the trial records it: its number, and the machine and PID namespace it is a
    number in (the kernel's boot id and the namespace; containers on one machine have namespaces of their own)."""
    try:
        machine = Path("/proc/sys/kernel/random/boot_id").read_text().strip() + os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        machine = None
    return {"machine": machine, "pid": os.getpid()}


def worker_gone(worker: object) -> bool:
    """Whether the worker a trial records (this_worker) is known to be gone: it ran on this machine and its process
    no longer exists. Another machine's worker, a process number taken again, or a killed worker not yet reaped by
    its parent are left to Optuna's heartbeat."""
    here = this_worker()["machine"]
    if not isinstance(worker, dict) or here is None or worker.get("machine") != here:
        return False
    try:
        os.kill(worker["pid"], 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        pass
    return False


def fail_abandoned(study: optuna.Study, again: bool = True) -> None:
    """Trials left running by a worker that is gone fail and run `again` first: a worker of this machine is known to
    be gone at once, another once its heartbeat is older than the grace period. Optuna checks the heartbeats before
    every trial it runs, not in a run that finds the study complete."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if worker_gone(trial.user_attrs.get("worker")):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            if again:
                retry(study, trial)
    with warnings.catch_warnings():  # marked experimental: by its category
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def requeue(study: optuna.Study, numbers: set[int]) -> None:
    """The trials of this worker that a stop or a full disk cut short: failed (not left running) and queued to run
    again first. A database that refuses the writes (on the full disk) leaves that to the next run (fail_abandoned)."""
    cut_short = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL)
    try:
        for trial in study.get_trials(deepcopy=False, states=cut_short):
            if trial.number in numbers:
                if trial.state == optuna.trial.TrialState.RUNNING:
                    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                retry(study, trial)
    except sqlalchemy.exc.SQLAlchemyError:
        pass


class WithoutTracebacks(logging.Filter):
    """Optuna logs a failed trial with its traceback: the message only (main() prints the error's one line), and
    nothing for a stop or a mistake in the options, which have lines of their own. Not with --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError | KeyboardInterrupt):
            return False
        record.exc_info, record.exc_text = None, None
        return True


def disk_fault(error: BaseException | None) -> BaseException | None:
    """The full or read-only disk behind an error, anywhere in its chain (a trial's OSError under Lightning's, SQLite's
    "database or disk is full" under SQLAlchemy's and Optuna's), or None."""
    seen = []
    while error is not None and not any(error is e for e in seen):
        if isinstance(error, OSError) and error.errno in DISK_FAULTS:
            return error
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return error
        seen.append(error)
        error = error.__cause__ or error.__context__
    return None


def explain(error: Exception) -> str:
    """The one line for an error that ends the search; a disk's says that the same command goes on with the study."""
    cause = None if isinstance(error, UserError) else disk_fault(error)
    if isinstance(cause, sqlite3.Error):  # SQLite's "database or disk is full"
        cause = OSError(errno.ENOSPC, str(cause))
    return explain_failure(cause or error, then="run the same command again: the study goes on")


def open_study(name: str, url: str, prune_after: int = 0, attempts: int = 5) -> optuna.Study:
    """Create the study, or join it if another worker has. Workers starting at the same moment race to create
    the database's tables: the loser's insert fails (IntegrityError), and a second try finds them made. A SQLite
    file this call made and could not fill (a full disk) is removed again; one that was there is kept."""
    database = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
    made = database is not None and not database.exists()
    try:
        for attempt in range(attempts):
            try:
                # Workers sharing one SQLite file wait for each other's writes instead of failing after 5 s.
                connect = {"connect_args": {"timeout": 60}} if database else {}
                # A server that never answers is given seconds, not the driver's default of minutes.
                if url.split(":")[0].split("+")[0] in ("postgresql", "mysql"):
                    connect = {"connect_args": {"connect_timeout": CONNECT_SECONDS}}
                # A heartbeat per running trial: a trial whose worker died (killed, its machine gone) is marked
                # failed after the grace period and tried again, instead of counting as running forever.
                with warnings.catch_warnings():  # Optuna's heartbeat is marked experimental: by its category
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(url, engine_kwargs=connect, heartbeat_interval=HEARTBEAT,
                                                         grace_period=3 * HEARTBEAT,
                                                         heartbeat_stale_trial_callback=retry)  # fmt: skip
                return optuna.create_study(
                    study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=prune_after),
                )  # fmt: skip
            except sqlalchemy.exc.SQLAlchemyError as error:
                # A server that refuses or never answers: another try only waits longer (the race: IntegrityError).
                unreachable = isinstance(error, sqlalchemy.exc.OperationalError) and not database
                if attempt == attempts - 1 or disk_fault(error) or unreachable:
                    raise
                time.sleep(0.5 + random.random())  # apart, so that the next tries do not collide again
    except BaseException:
        if made and database.is_file() and database.stat().st_size == 0:  # not one another worker filled meanwhile
            database.unlink()
        raise


def main(argv: list[str] | None = None) -> int:
    """tune.py's command line; an error ends with one line (--debug: its traceback), a stop signal with one line
    and status 128 + its number."""
    command_line, argv = argv is None, sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    stops, quiet = StopSignals(), WithoutTracebacks()
    # On the handler: a logger's own filter does not see its children's records.
    handlers = [] if debug else list(logging.getLogger("optuna").handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        return search([word for word in argv if word != "--debug"], stops)
    except Exception as error:
        if debug:
            raise
        return fail(explain(error))
    finally:
        # A Python caller gets its handlers back; the command line keeps these to its end, so that a stop signal
        # while the process exits (the study done or the stop's line printed) does not kill it after all.
        if not command_line:
            stops.restore()
        for handler in handlers:
            handler.removeFilter(quiet)


def stopped(status: int, study: optuna.Study, trials: int, cut_short: bool) -> int:
    """The line a stop signal ends the search with; its status."""
    name = f"stopped by {signal.Signals(status - 128).name}" if status > 128 else "stopped"  # 0 in a SLURM job
    name = "interrupted (Ctrl-C)" if status == 128 + signal.SIGINT else name
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    again = "the trial cut short runs again first; " if cut_short else ""
    print(f"{name}: {again}`python tune.py` with the same options goes on (the study has {done} of {trials} trials)",
          file=sys.stderr)  # fmt: skip
    return status


def search(argv: list[str], stops: StopSignals) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     exit_on_error=False)  # fmt: skip
    parser.add_argument("--trials", type=int, default=20, help="total number of trials the study should reach")
    parser.add_argument("--study", default="mnist", help="study name (several workers on one name share it)")
    parser.add_argument("--storage", default="sqlite:///logs/optuna.db", help="any database URL Optuna takes")
    parser.add_argument("--net", choices=["CNN", "MLP"], default="CNN")
    parser.add_argument("--out", type=Path, default=Path("logs/tune"), help="trial recipes and best.yaml go here")
    parser.add_argument("--space", type=Path, help="YAML search space replacing the built-in one (see above)")
    parser.add_argument("--prune_after", type=int, default=0, help="epochs every trial runs before it may be pruned")
    try:
        args, train_args = parser.parse_known_args(argv)
    except argparse.ArgumentError as error:  # a value of tune.py's own options (--net cnn, --trials two)
        return fail(f"{error}; `python tune.py --help` lists the options")
    if args.trials < 1:
        return fail(f"--trials must be at least 1, got {args.trials}")
    if args.prune_after < 0:
        return fail(f"--prune_after must be 0 or more (epochs), got {args.prune_after}")
    args.out = Path(expand(str(args.out)))  # ~ and $VARS, as train.py expands its paths
    try:
        space = read_space(Path(expand(str(args.space)))) if args.space else None
    except UserError as error:
        return fail(str(error))
    if args.storage.startswith("sqlite:///"):  # a file's path: ~ and $VARS too (sqlite:////abs/path once expanded)
        database = expand(args.storage.removeprefix("sqlite:///"))
        args.storage = "sqlite:///" + database
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    train_args = ["--enable_progress_bar", "false", *train_args]
    scheme = args.storage.split(":")[0]
    stops.trial_run = stop_now  # a stop signal while the database is reached: one line at once, not after the wait
    try:
        for signum in stops.received[:1]:  # noted while tune.py loaded
            stop_now(signum, None)
        study = open_study(args.study, args.storage, args.prune_after)
    except Stopped as stop:
        print(f"stopped by {signal.Signals(stop.code - 128).name} while opening the study's database (--storage "
              f"{scheme}://...); nothing was written", file=sys.stderr)  # fmt: skip
        return stop.code
    except ImportError as error:  # SQLAlchemy found no driver for the database (Optuna re-raises it)
        extra = 'pip install -e ".[postgres]"' if scheme.startswith("postgresql") else "install its Python driver"
        return fail(
            f"--storage {scheme}://...: the database driver is not installed ({error.__cause__ or error}); {extra}"
        )
    except sqlalchemy.exc.SQLAlchemyError as error:  # nothing listens, wrong password, no such database
        if disk_fault(error):
            raise  # main's line: the disk, not the URL
        reason = " ".join(str(getattr(error, "orig", None) or error).split())[:200]
        return fail(f"--storage {scheme}://...: cannot open the study's database ({reason}); check the URL and "
                    "that the database server runs")  # fmt: skip
    finally:
        stops.trial_run = None
    args.out.mkdir(parents=True, exist_ok=True)
    fail_abandoned(study)
    enough = optuna.study.MaxTrialsCallback(args.trials, states=FINISHED)
    ran: set[int] = set()  # the numbers of the trials this worker ran

    def run_trial(trial: optuna.Trial) -> float:
        ran.add(trial.number)
        trial.set_user_attr("worker", this_worker())  # a later run can tell whether it is gone (fail_abandoned)
        try:
            recipe = space_recipe(trial, space) if space is not None else trial_recipe(trial, args.net)
        except ValueError as error:  # Optuna: a name the study already searched, over other values
            raise UserError(f"the study '{args.study}' was searched over another space ({error}); give another "
                            "--study name for this one") from error  # fmt: skip
        stops.check()  # after the values are drawn: a trial that fails here runs them again first
        return objective(trial, recipe, train_args, args.out, stops)

    def stop_when_told(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if stops.received:
            study.stop()

    try:
        if len(study.get_trials(states=FINISHED)) < args.trials and not stops.received:
            study.optimize(run_trial, callbacks=[enough, stop_when_told], catch=())
    except UserError as error:
        return fail(str(error))
    except BaseException as error:  # Optuna has marked a trial that raised failed, not one cut short outside it
        if isinstance(error, KeyboardInterrupt) or disk_fault(error):
            requeue(study, ran)
        if not isinstance(error, KeyboardInterrupt):
            raise
        status = error.args[0] if error.args and isinstance(error.args[0], int) else 128 + signal.SIGINT
        return stopped(status, study, args.trials, cut_short=True)
    if stops.received and len(study.get_trials(states=FINISHED)) < args.trials:
        return stopped(128 + stops.received[0], study, args.trials, cut_short=False)
    # The study is done; a trial still running whose worker died meanwhile (killed on this machine) would keep
    # best.yaml from being written by anyone: it fails, not to run again (the total is reached).
    fail_abandoned(study, again=False)
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
    finished = [t for t in trials if t.state in FINISHED]  # not a failed one (a dead worker's, failed just now)
    if not ran or not finished:
        return not path.exists()
    return max(finished, key=lambda t: t.datetime_complete).number in ran


if __name__ == "__main__":
    sys.exit(main())

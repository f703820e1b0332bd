"""Preemption: a run told to stop (a cluster's signal, Ctrl-C) saves its newest state in its run folder and ends.

Clusters stop jobs with a signal: SLURM's `#SBATCH --signal=USR1@90` sends SIGUSR1 90 s before the time limit,
and a requeue or cancel sends SIGTERM (then SIGKILL after the cluster's KillWait, 30 s by default). The signal
handler only notes it; the next safe point acts on it, so a signal that falls during validation or while a
checkpoint is being written waits for that to finish:

- after an optimizer step (not the epoch's last): the state after that step (its train/loss point, if it was
  to be logged, is not: Lightning writes it after this hook);
- at the end of an epoch, after validation and the epoch's own checkpoints: the epoch-end state, exactly
  what a run that was never stopped has at that point.

There `last.ckpt` of the run folder is written (atomically, like every checkpoint here), `--ckpt_path last`
of the restarted job takes it, and no finished step is trained again. On SIGUSR1 inside a SLURM job the job
is requeued (`scontrol requeue`); SIGTERM came from whoever stops the job, who decides whether it comes back.
Ctrl-C (SIGINT) while training does the same: the first saves at the next safe point and stops, a second stops
at once (Lightning's KeyboardInterrupt handling; status 130), naming the newest saved checkpoint; while testing,
the first stops after the batch. The process then
exits with status 0 inside a SLURM job (the scheduler requeues or cancels it: the work goes on in the requeued
job, and another status would mark the step FAILED), else with 128 + the signal's number as a shell reports it
(130 for Ctrl-C, 143 for SIGTERM, 138 for SIGUSR1, 129 for SIGHUP when the terminal closes): the run is not
finished, and a script can tell.
Lightning's own SLURM handler (which saves
`hpc_ckpt_N.ckpt` into --default_root_dir, outside the run) is switched off by the CLI while this callback is on.
"""

import atexit
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from project.run.last_checkpoint import LAST, LastCheckpoint
from project.run.signals import STOP_SIGNALS
from project.run.signals import note as early_note


class Preempted(SystemExit):
    """Ends the process once the checkpoint is saved (a SystemExit, like Lightning's own SIGTERMException, so
    that Lightning closes the loggers): status 0 in a SLURM job, else 128 + the signal's number."""


class Preemption(Checkpoint):
    """Saves `last.ckpt` at the first safe point after SIGUSR1, SIGTERM or SIGHUP (the terminal closed), requeues
    a SLURM job on SIGUSR1, and stops the process. A Checkpoint subclass, so that Lightning runs its epoch-end
    hook after the LightningModule's and after the other checkpoint callbacks'."""

    requeues_slurm_jobs = True  # the CLI switches Lightning's own SLURM handler off for it

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.evaluating: str | None = None  # "the test" while testing (validate, predict alike), outside fit
        self.fitted = False  # a fit ended in this process: what comes next is the test after it
        self.interrupt: object = signal.default_int_handler
        # Its lines on what was saved and what to run next (tune.py, which runs a stopped trial again from its
        # start, says its own instead).
        self.advises = True
        # Noted from the moment the run is built (a signal in a job's first seconds would else kill it), acted on
        # at the first safe point.
        previous = {sig: signal.signal(sig, self.notice) for sig in STOP_SIGNALS}
        # Where train.py noted them while it loaded, the process is the run's: between its stages (fit, then its
        # test) and while it exits they stay noted, for the next stage to act on, or dropped once the run is done
        # (the default action would kill it: SIGUSR1's, SLURM's time-limit signal, would mark a done job FAILED).
        self.previous = {sig: self.notice if h is early_note else h for sig, h in previous.items()}

    def notice(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)
        if self.received == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
            then = f"stopping {self.evaluating} after this batch" if self.evaluating else None
            print(f"\nCtrl-C: {then or 'saving last.ckpt after this step'}, then stopping (Ctrl-C again: stop now)",
                  file=sys.stderr)  # fmt: skip

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Installed before Lightning installs its own handlers, so that they are the ones Lightning restores
        # when a stage ends: a signal that arrives while the process exits (SLURM's SIGTERM after a requeue)
        # or during testing (SIGUSR1's default action kills) is then only noted.
        for sig in STOP_SIGNALS:
            handler = signal.signal(sig, self.notice)
            self.previous[sig] = handler if handler != self.notice else self.previous[sig]  # the one before ours

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A stage that ended normally gives the process its handlers back (a preempted one never gets here).
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # While training, replaces Lightning's SIGTERM handler, which stops at the next batch, also in the
        # middle of validation; this one waits for the next safe point. Ctrl-C too, while training only.
        signal.signal(signal.SIGTERM, self.notice)
        self.interrupt = signal.signal(signal.SIGINT, self.notice)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signal.signal(signal.SIGINT, self.interrupt)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fitted = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluation(trainer, "the validation")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluation(trainer, "the test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluation(trainer, "the prediction")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluation(trainer, None)

    on_test_end = on_predict_end = on_validation_end

    def evaluation(self, trainer: L.Trainer, what: str | None) -> None:
        """Ctrl-C while validating, testing or predicting (not the validation inside fit): noted, acted on after the
        batch (a KeyboardInterrupt raised inside the drawing of the test's pictures comes out of matplotlib as
        another error)."""
        if trainer.state.fn == "fit":
            return
        self.evaluating = what
        if what:
            self.interrupt = signal.signal(signal.SIGINT, self.notice)
        else:
            signal.signal(signal.SIGINT, self.interrupt)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero and self.advises:
            path, step = self.last_checkpoint_path(trainer), trainer.global_step
            if trainer.state.fn != "fit":
                said = f" during {trainer.state.fn}: nothing of it written; {self.again()}"
            elif path.is_file():
                said = f": the newest saved state is {path}; the same command with --ckpt_path last goes on from it"
            elif step == 0:
                said = " before the first training step: nothing was trained; run the same command again"
            else:
                said = f" at step {step}, before the first epoch ended: nothing was saved; run the same command again"
            print(f"interrupted{said}", file=sys.stderr)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # After a batch that ended an optimizer step, where Lightning's own mid-epoch checkpoints are taken
        # (its resume expects them there); the epoch's last batch waits for validation and the epoch end.
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if stepped and not trainer.is_last_batch and self.stop_requested(trainer):
            self.save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After validation, the LightningModule's epoch-end hook and the epoch-end checkpoints (this callback
        # is the last one): the state a run that was never stopped has here, so the resumed run is that run.
        if self.stop_requested(trainer):
            self.save_and_stop(trainer)

    def stop_requested(self, trainer: L.Trainer) -> bool:
        return any_process(trainer, self.received is not None)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        # Told to stop while testing (after fit, say), validating or predicting: nothing to save (no training state;
        # last.ckpt stays the fit's); stop, and requeue on SIGUSR1: --ckpt_path last then tests again. Decided by
        # each process alone: under DDP the processes may have test batches of different counts, so a collective
        # call here would wait forever (a cluster signals every process of a job).
        if self.received is not None and trainer.state.fn != "fit":  # fit's validation: at the epoch's end
            self.save_and_stop(trainer, save=False)

    on_validation_batch_end = on_predict_batch_end = on_test_batch_end

    def again(self) -> str:
        """What a user does after an evaluation was stopped."""
        return "the same command with --ckpt_path last tests again" if self.fitted else "run the same command again"

    def save_and_stop(self, trainer: L.Trainer, save: bool = True) -> None:
        path = self.last_checkpoint_path(trainer)
        if save:
            trainer.save_checkpoint(path, weights_only=False)  # everything a resume needs
        job = os.environ.get("SLURM_JOB_ID")
        asked = self.received == signal.SIGUSR1
        requeue = (any_process(trainer, asked) if save else asked) and job is not None
        if trainer.is_global_zero and self.advises:
            what = "stopping; the same command with --ckpt_path last goes on from it" if save else self.again()
            what = f"requeueing SLURM job {job} on exit" if requeue else what
            name = self.received.name if self.received else "a signal to another process"
            verb = {"validate": "validating", "test": "testing", "predict": "predicting"}.get(trainer.state.fn)
            stopped = f"stopped {verb}" + (" (last.ckpt kept)" if self.fitted else ", nothing of it written")
            done = f"saved {path} at step {trainer.global_step}" if save else stopped
            bar = "\n" if trainer.progress_bar_callback is not None else ""  # not on the bar's line
            print(f"{bar}{name}: {done}; {what}", file=sys.stderr)
        job_id = None  # the job to requeue at exit, by process 0 only
        if requeue and trainer.is_global_zero:
            task = os.environ.get("SLURM_ARRAY_TASK_ID")  # an array task is known by its array form
            job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}" if task else job
        atexit.register(leave_quietly, job_id)
        signal.signal(signal.SIGINT, self.interrupt)
        # In a SLURM job the scheduler decides what comes next (requeue, cancel): a failed status would only mark
        # the step FAILED. Elsewhere the status tells a script that the run is not finished.
        raise Preempted(0 if job is not None else 128 + (self.received or signal.SIGTERM))

    @staticmethod
    def last_checkpoint_path(trainer: L.Trainer) -> Path:
        """The run folder's checkpoints/last.ckpt, the file `--ckpt_path last` resumes from."""
        last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        folder = Path(last.dirpath) if last is not None and last.dirpath else Path(trainer.log_dir) / "checkpoints"
        return folder / f"{LAST}.ckpt"


def any_process(trainer: L.Trainer, decision: bool) -> bool:
    """True on every process when it is True on any (all stop at the same step); no communication for one."""
    return decision if trainer.world_size == 1 else trainer.strategy.reduce_boolean_decision(decision, all=False)


def leave_quietly(requeue_job: str | None) -> None:
    """At exit, once Lightning has closed the logs: ignore SIGTERM from here on, which a requeue or cancel sends
    to every process of the job and which would otherwise end this one as failed while it shuts down (Python
    resets its own handlers then; an ignored signal stays ignored), then ask SLURM to requeue the job."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if requeue_job:
        subprocess.run(["scontrol", "requeue", requeue_job], check=False)

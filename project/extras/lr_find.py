"""Learning-rate finder: Lightning's range test on the chosen recipe, its plot, and the suggested rate.

    python -m project.extras.lr_find [the options of train.py, e.g. --config configs/mlp.yaml --data.dataset kmnist]

Trains for `--num_training` steps (100) while the rate grows exponentially from 1e-6 to 1, then prints the rate
where the loss falls fastest and saves the loss-versus-rate plot as lr_find.png in a new run folder and in
TensorBoard (image `lr_find`). Use the suggestion as --model.optimizer.lr (under the one-cycle recipes that rate
is the peak: a few times the suggestion).
"""

import contextlib
import io
import math
import shutil
import signal
import sys
from pathlib import Path

from lightning.pytorch.tuner import Tuner

from project.cli import SUBCOMMANDS
from project.errors import UserError
from project.extras.atomic import tensorboard, write_atomically
from project.extras.pictures import NO_MATPLOTLIB  # and matplotlib set to draw to memory
from project.run.cli import RunCLI
from project.run.errors import explain_failure, fail, option_error
from project.run.signals import Stopped

MIN_STEPS = 13  # Lightning's suggestion leaves out the first 10 steps and the last, and needs two points between


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug, argv = "--debug" in argv, [word for word in argv if word != "--debug"]
    if NO_MATPLOTLIB:  # the plot's: the [pictures] extra, checked before the minutes of the range test
        return fail(NO_MATPLOTLIB)
    steps, cli = 100, None
    # --num_training=5 as --num_training 5
    argv = [part for word in argv for part in (word.split("=", 1) if word.startswith("--num_training=") else [word])]
    try:
        if argv and argv[0] in SUBCOMMANDS:
            raise UserError(f"lr_find takes no subcommand ({argv[0]!r}): it runs a range test of the fit that the "
                            "same options would run; leave it out")  # fmt: skip
        if "--num_training" in argv:
            where = argv.index("--num_training")
            steps = int(argv[where + 1]) if where + 1 < len(argv) and argv[where + 1].isdigit() else 0
            if steps < MIN_STEPS:
                raise UserError(f"--num_training takes a number of steps, {MIN_STEPS} or more (default 100): a "
                                "suggestion leaves out the first 10 and needs 3 more")  # fmt: skip
            argv = argv[:where] + argv[where + 2 :]
        cli = RunCLI(argv, run=False)
        finder = Tuner(cli.trainer).lr_find(
            cli.model, datamodule=cli.datamodule, min_lr=1e-6, max_lr=1.0, num_training=steps, update_attr=False
        )
        # A stop signal ends the range test early (Lightning's handler), and the preemption callback notes it:
        # a rate from a cut-short test would mislead.
        received = next((c.received for c in cli.trainer.callbacks if getattr(c, "received", None)), None)
        if received is not None:
            raise Stopped(128 + received)
        losses = finder.results["loss"]  # smoothed; Lightning stops at 4 x the lowest (a diverged loss: the end)
        if len(losses) < steps and losses and losses[-1] <= 4 * min(losses):  # the training batches ran out
            epochs = cli.trainer.max_epochs
            enough = math.ceil(steps * max(epochs, 1) / len(losses))  # epochs that hold `steps` training batches
            fewer = f", or --num_training {len(losses)} or fewer" if len(losses) >= MIN_STEPS else ""
            raise UserError(f"the range test ran {len(losses)} of its {steps} steps: the training data ends there "
                            f"(--max_epochs {epochs}); give --max_epochs {enough} or more{fewer}")  # fmt: skip
        suggestion = finder.suggestion()  # from the steepest fall, leaving out the first 10 steps and the last
        if suggestion is None and len(losses) < MIN_STEPS:  # Lightning stops where the loss is 4 x its lowest
            raise UserError(f"the loss diverged at step {len(losses)} of the range test, before the {MIN_STEPS} steps "
                            "a suggestion needs; no rate suggested")  # fmt: skip
        figure = finder.plot(suggest=True)
        figure.axes[0].set_title(f"learning-rate range test: suggested {suggestion:.2e}" if suggestion else "")
        folder, image = Path(cli.trainer.log_dir), io.BytesIO()
        figure.savefig(image, format="png", dpi=100)
        write_atomically(folder / "lr_find.png", image.getvalue())
        writer = tensorboard(cli.trainer)
        if writer is not None:
            writer.add_figure("lr_find", figure, 0)
            writer.flush()
    except BaseException as error:  # one line, as train.py's; the run folder this process made goes
        if cli is not None and cli.claimed is not None:
            if cli.trainer.logger is not None:
                cli.trainer.logger.finalize("failed")  # the event file closed before it goes
            shutil.rmtree(cli.claimed, ignore_errors=True)
            with contextlib.suppress(OSError):  # and its experiment folder, where this run was its first
                cli.claimed.parent.rmdir()
        if isinstance(error, KeyboardInterrupt) or isinstance(error.__context__, KeyboardInterrupt):
            print("interrupted (Ctrl-C): no rate suggested, nothing kept", file=sys.stderr)
            return 128 + signal.SIGINT  # Lightning ends a stage at Ctrl-C with SystemExit(1)
        if isinstance(error, Stopped):
            print(f"{signal.Signals(error.code - 128).name}: stopped, no rate suggested, nothing kept", file=sys.stderr)
            return error.code
        if debug or not isinstance(error, Exception):
            raise
        return fail(option_error(error, cli.config if cli else None) or explain_failure(error))  # the option named
    print(f"suggested learning rate: {suggestion:.2e}" if suggestion else "no suggestion: the loss never fell")
    print(f"plot: {Path(folder) / 'lr_find.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning-rate finder: Lightning's range test on the chosen recipe, its plot, and the suggested rate.

    python -m project.extras.lr_find [the options of train.py, e.g. --config configs/mlp.yaml --data.dataset kmnist]

Trains for `--num_training` steps (100) while the rate grows exponentially from 1e-6 to 1, then prints the rate
where the loss falls fastest and saves the loss-versus-rate plot as lr_find.png in a new run folder and in
TensorBoard (image `lr_find`). Use the suggestion as --model.optimizer.lr (under the one-cycle recipes that rate
is the peak: a few times the suggestion).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from lightning.pytorch.tuner import Tuner  # noqa: E402

from project.cli import ClassifierCLI, explain_failure  # noqa: E402
from project.errors import UserError, fail  # noqa: E402
from project.extras.atomic import tensorboard  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug, argv = "--debug" in argv, [word for word in argv if word != "--debug"]
    steps = 100
    try:
        if "--num_training" in argv:
            where = argv.index("--num_training")
            steps = int(argv[where + 1]) if where + 1 < len(argv) and argv[where + 1].isdigit() else 0
            if steps < 1:
                raise UserError("--num_training takes a number of steps, 1 or more (default 100)")
            argv = argv[:where] + argv[where + 2 :]
        cli = ClassifierCLI(argv, run=False)
        finder = Tuner(cli.trainer).lr_find(
            cli.model, datamodule=cli.datamodule, min_lr=1e-6, max_lr=1.0, num_training=steps, update_attr=False
        )
    except Exception as error:  # one line, as train.py's
        if debug:
            raise
        return fail(explain_failure(error))
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=True)
    figure.axes[0].set_title(f"learning-rate range test: suggested {suggestion:.2e}" if suggestion else "")
    folder = cli.trainer.log_dir
    Path(folder).mkdir(parents=True, exist_ok=True)
    figure.savefig(Path(folder) / "lr_find.png", dpi=100)
    writer = tensorboard(cli.trainer)
    if writer is not None:
        writer.add_figure("lr_find", figure, 0)
        writer.flush()
    print(f"suggested learning rate: {suggestion:.2e}" if suggestion else "no suggestion: the loss never fell")
    print(f"plot: {Path(folder) / 'lr_find.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

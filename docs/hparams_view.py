"""Draw TensorBoard's HPARAMS parallel-coordinates view of a study as a PNG, from the runs' own event files.

    python docs/hparams_view.py logs/tune-cnn docs/study_hparams.png [--metric val/acc_best]

Each run under the folder (one per tune.py trial) is a line through one axis per hyper-parameter that differs
between runs, ending on the metric's axis; colour is the metric. What TensorBoard shows under HPARAMS, read
with TensorBoard's own event reader; runs that wrote no HPARAMS summary (pruned trials stop before) are left out.
"""

import argparse
import math
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from project.extras.pictures import NO_MATPLOTLIB, plt  # pyplot drawing to memory, or what to install
from project.run.errors import fail

if NO_MATPLOTLIB:  # the [pictures] extra
    sys.exit(fail(NO_MATPLOTLIB))


def read_sessions(folder: Path, metric: str) -> list[tuple[dict, float]]:
    """(hyper-parameters, metric) of every run under folder that has an HPARAMS summary and the metric."""
    sessions = []
    for run in sorted({events.parent for events in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
        accumulator.Reload()
        try:
            content = accumulator.PluginTagToContent("hparams").get("_hparams_/session_start_info")
        except KeyError:  # no HPARAMS summary in this run
            content = None
        if not content or metric not in accumulator.Tags()["scalars"]:
            continue
        start = HParamsPluginData.FromString(content).session_start_info
        values = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
        sessions.append((values, max(event.value for event in accumulator.Scalars(metric))))
    return sessions


def draw(sessions: list[tuple[dict, float]], metric: str, path: Path) -> None:
    names = sorted(n for n in {n for values, _ in sessions for n in values}
                   if len({repr(values.get(n)) for values, _ in sessions}) > 1)  # fmt: skip
    axes = [*names, metric]
    columns = [[values.get(n) for values, _ in sessions] for n in names] + [[score for _, score in sessions]]
    positions, labels = [], []
    for column in columns:  # each axis scaled to 0..1: numbers linearly (log if they span 10x), others in order
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in column)
        if numeric:
            log = min(column) > 0 and max(column) / min(column) >= 10
            scaled = [math.log(v) for v in column] if log else list(column)
            low, high = min(scaled), max(scaled)
            positions.append([(v - low) / (high - low or 1) for v in scaled])
            labels.append([f"{min(column):.3g}", f"{max(column):.3g}"])
        else:
            kinds = sorted({str(v) for v in column})
            positions.append([kinds.index(str(v)) / (len(kinds) - 1 or 1) for v in column])
            labels.append([kinds[0], kinds[-1]])
    scores = columns[-1]
    low, high = min(scores), max(scores)
    figure, ax = plt.subplots(figsize=(2 + 1.6 * len(axes), 4.5))
    colours = plt.get_cmap("viridis")
    for i in sorted(range(len(sessions)), key=lambda i: scores[i]):  # best drawn last, on top
        ax.plot(range(len(axes)), [p[i] for p in positions], color=colours((scores[i] - low) / (high - low or 1)),
                linewidth=2.5 if scores[i] == high else 1.2, alpha=0.9)  # fmt: skip
    for x, (bottom, top) in enumerate(labels):
        ax.axvline(x, color="grey", linewidth=0.8)
        ax.annotate(bottom, (x, -0.04), ha="center", va="top", fontsize=8)
        ax.annotate(top, (x, 1.04), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(axes)), [a.replace("/init_args/", ".").replace("/", ".") for a in axes],
                  rotation=20, ha="right", fontsize=8)  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(f"{len(sessions)} runs, coloured by {metric} ({low:.4f} to {high:.4f}; best in bold)", fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--metric", default="val/acc_best")
    args = parser.parse_args()
    sessions = read_sessions(args.folder, args.metric)
    if len(sessions) < 2:
        raise SystemExit(f"error: {args.folder}: {len(sessions)} runs with an HPARAMS summary and {args.metric}")
    draw(sessions, args.metric, args.out)
    print(f"wrote {args.out} from {len(sessions)} runs")


if __name__ == "__main__":
    main()

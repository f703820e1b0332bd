"""Three layers, held here: the core (what `python -m project.cli` runs: at most 1,000 lines, its CLI at most 150),
the run layer around it (project/run/: train.py is core + run layer, at most 1,500 lines together) and the extras
(project/extras/, wired in by configs/train.yaml). Imports run one way: extras -> run layer -> core."""

import ast
import functools
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from project.cli import ClassifierCLI
from tests.conftest import FAST_TRAINER, FIGURES, REPO, read_events, run_folder

PROBE = """
import json, sys
from pathlib import Path
root = Path.cwd() / "project"
for modules in sys.argv[1:]:  # in turn: each set adds to what the sets before it imported
    for name in modules.split(", "):
        __import__(name)
    loaded = [Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
    print(json.dumps(sorted({str(path.relative_to(root.parent)) for path in loaded if path.is_relative_to(root)})))
"""
CORE = "project.cli, project.data.mnist, project.models.cnn"  # the core's CLI, the default data module and net
RUN = "project.run.cli"  # train.py's CLI: the core and the run layer


@functools.cache
def imported(*module_sets: str) -> list[dict[str, int]]:
    """For each set of modules, imported in turn in one fresh interpreter, the project's files loaded so far with
    their line counts."""
    done = subprocess.run([sys.executable, "-c", PROBE, *module_sets], cwd=REPO, capture_output=True, text=True,
                          check=True)  # fmt: skip
    counts = [json.loads(line) for line in done.stdout.splitlines()]
    return [{file: len((REPO / file).read_text().splitlines()) for file in files} for files in counts]


def layer(file: str) -> int:
    """0: the core, 1: the run layer, 2: an extra (a module the core's files do not reach is no core module)."""
    return 2 if file.startswith("project/extras/") else 1 if file.startswith("project/run/") else 0


def test_the_core_is_at_most_1000_lines_and_runs_without_the_other_layers():
    files = imported(CORE, RUN)[0]
    assert [f for f in files if layer(f)] == [], "the core imports the run layer or an extra"
    assert files["project/cli.py"] <= 150, f"the core's CLI is {files['project/cli.py']} lines"
    assert sum(files.values()) <= 1000, f"the core is {sum(files.values())} lines in {len(files)} files"


@pytest.mark.xfail(reason="core + run layer are 2,275 lines (limit 1,500): see the note of issue 28", strict=True)
def test_core_and_run_layer_are_at_most_1500_lines():
    files = imported(CORE, RUN)[1]
    assert [f for f in files if layer(f) == 2] == [], "the run layer imports an extra"
    assert sum(files.values()) <= 1500, f"core and run layer are {sum(files.values())} lines in {len(files)} files"


def test_imports_run_one_way_and_only_at_the_top_of_a_module():
    """extras -> run layer -> core: a core module imports neither of the others, the run layer no extra, and no
    function imports a module of its own (a hidden tie that the line counts above would miss)."""
    wrong = []
    for path in sorted((REPO / "project").rglob("*.py")):
        file = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text())
        blocks = [node for node in tree.body if isinstance(node, ast.If | ast.Try)]  # if __name__ == "__main__"
        top = {id(node) for node in [*tree.body, *(n for block in blocks for n in ast.iter_child_nodes(block))]}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in (n for n in names if n.startswith("project")):
                target = "project/extras/" if ".extras" in name else "project/run/" if ".run" in name else "project/"
                if layer(target) > layer(file) or id(node) not in top:
                    wrong.append(f"{file}:{node.lineno} imports {name}")
    assert wrong == []


def test_the_core_config_names_no_code_of_the_other_layers():
    """configs/base.yaml is the core's: a class path in it reaches only core code (train.yaml wires the extras)."""
    base = (REPO / "configs" / "base.yaml").read_text()
    assert "project.extras" not in base and "project.run" not in base
    assert "callbacks" not in yaml.safe_load(base)


def test_the_core_alone_trains_and_tests_the_default_recipe(mnist_dir, tmp_path):
    """`python -m project.cli`: LightningCLI's own options and run folders (lightning_logs/version_N), fit, then
    the test of the checkpoint it saved, with no run layer and no extra loaded."""
    options = ("--trainer.max_epochs 1 --trainer.limit_train_batches 3 --trainer.limit_val_batches 1 "
               "--trainer.limit_test_batches 2 --trainer.enable_progress_bar false --data.batch_size 32 "
               "--data.val_size 100 --model.net.channels [4,8,16] --model.net.hidden 16").split()  # fmt: skip
    code = "import runpy, sys; runpy.run_module('project.cli', run_name='__main__'); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code, "--data.data_dir", str(mnist_dir), "--trainer.default_root_dir",
                           str(tmp_path), *options], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test/acc" in done.stdout and not [m for m in done.stdout.split("'") if m.startswith("project.run")]
    assert "args parameter" not in done.stderr and "LeafSpec" not in done.stderr, done.stderr  # warnings of ours
    assert [p.name for p in (tmp_path / "lightning_logs" / "version_0" / "checkpoints").iterdir()] != []


def test_the_core_reads_a_batch_count_as_a_count(mnist_dir):
    """`--trainer.limit_val_batches 1` is one batch (Lightning's int), not 1.0, all of them (jsonargparse reads
    Lightning's `float | int` float first): the core's Trainer types the limits int first, for train.py too."""
    cli = ClassifierCLI(["--data.data_dir", str(mnist_dir), "--trainer.limit_val_batches", "1",
                         "--trainer.limit_train_batches", "0.5"], run=False)  # fmt: skip
    assert (cli.trainer.limit_val_batches, cli.trainer.limit_train_batches) == (1, 0.5)
    assert isinstance(cli.trainer.limit_val_batches, int)


def closure(extras: tuple[str, ...] = ()) -> set[str]:
    """The installed distributions that the template needs, with these extras of its own, by their requirements."""
    seen, todo = set(), [("mnist-lightning-template", extras)]
    while todo:
        name, wanted = todo.pop()
        if (name := name.lower().replace("_", "-"), wanted) in seen:
            continue
        seen.add((name, wanted))
        for requirement in map(Requirement, importlib.metadata.requires(name) or []):
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in (*wanted, "")):
                todo.append((requirement.name, tuple(requirement.extras)))
    return {name for name, _ in seen}


@pytest.mark.slow
def test_training_needs_the_six_packages_and_an_extra_names_its_group(mnist_dir, tmp_path):
    """The template's dependencies are the design's five and jsonargparse. In an environment without what only
    the optional groups bring, train.py fits and tests, with a note for the figures it leaves out, export writes
    torch.export's file with a note for ONNX's, and tune.py, lr_find and
    docs/hparams_view.py say in one line which group to install."""
    required = importlib.metadata.requires("mnist-lightning-template")
    names = {Requirement(dependency).name for dependency in required if "extra ==" not in dependency}
    assert names == {"torch", "torchvision", "lightning", "torchmetrics", "tensorboard", "jsonargparse"}
    only_extras = closure(("pictures", "tune", "onnx", "postgres")) - closure()
    assert {"matplotlib", "optuna", "onnx", "sqlalchemy"} <= only_extras
    # A virtual environment that holds this one's site-packages (links) but not those distributions' files.
    hidden = {file.parts[0] for name in only_extras for file in importlib.metadata.distribution(name).files or []}
    hidden -= {"..", "__pycache__"}  # a script in bin/; the compiled single-file modules of all
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "env"], check=True)
    site = next((tmp_path / "env" / "lib").glob("python*/site-packages"))
    for entry in Path(importlib.metadata.distribution("torch").locate_file("")).iterdir():
        if entry.name not in hidden:
            (site / entry.name).symlink_to(entry)
    python = str(tmp_path / "env" / "bin" / "python")
    options = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *FAST_TRAINER, *FIGURES]
    done = subprocess.run([python, "train.py", *options], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test/acc" in done.stdout
    extra = '(".[dev]" has every extra)'
    note = f'note: no test figures: matplotlib is not installed: pip install -e ".[pictures]" {extra}'
    assert note in done.stderr.splitlines()
    other: dict = {}
    scalars, _ = read_events(run_folder(tmp_path / "logs"), other)
    assert "test/acc_class/0 - zero" in scalars and list(other["images"]) == ["train/inputs"]  # no figure
    checkpoint = next((tmp_path / "logs").rglob("last.ckpt"))
    command = [python, "-m", "project.extras.export", str(checkpoint), "--out", str(tmp_path / "export")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "export" / "model.pt2").is_file(), done.stderr
    assert f'note: no ONNX file: onnx is not installed: pip install -e ".[onnx]" {extra}' in done.stderr.splitlines()
    assert not (tmp_path / "export" / "model.onnx").exists()
    lines = {
        "tune.py": 'optuna is not installed: pip install -e ".[tune]"',
        "project.extras.lr_find": 'matplotlib is not installed: pip install -e ".[pictures]"',
        "docs/hparams_view.py": 'matplotlib is not installed: pip install -e ".[pictures]"',
    }
    for command, line in lines.items():
        command = [command] if command.endswith(".py") else ["-m", command]
        done = subprocess.run([python, *command], cwd=REPO, capture_output=True, text=True)
        assert (done.returncode, done.stderr) == (2, f"error: {line} {extra}\n")

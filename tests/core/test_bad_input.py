"""Every mistake in the "Bad input" table of docs/reliability.md: one line saying what is wrong and what to do, exit
status 2, no traceback, and nothing half-written (no run folder, data folder untouched)."""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest
import torch
from torchvision.datasets import MNIST

from project.classifier import ImageClassifier
from project.errors import UserError
from project.models import MLP
from project.run.cli import RunCLI, main
from tests.conftest import FAST_TRAINER, REPO, run_cli
from tests.idx_files import write_idx
from tests.image_folders import write_image_folder


def raw(data: Path) -> Path:
    return data / "MNIST" / "raw"


def replace_bytes(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def mlp_checkpoint(tmp: Path) -> Path:
    """A checkpoint of a 784-512-10 MLP without hyper-parameters (as a fork's or an older run's may be), so
    that nothing tells the CLI to build an MLP instead of the default CNN."""
    path = tmp / "mlp.ckpt"
    torch.save({"state_dict": ImageClassifier(net=MLP()).state_dict(), "pytorch-lightning_version": "2.6.6"}, path)
    return path


def code_checkpoint(tmp: Path) -> Path:
    """A checkpoint that holds a Python object (a path), which loading would have to import: not weights only."""
    path = tmp / "code.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"data_dir": PurePosixPath("data")}}, path)
    return path


# (what the user did, how: f(tmp folder, data folder) -> arguments, the start of what the error line says)
CASES = [
    ("unknown model class", lambda t, d: ["--model.net", "LeNet"], "--model.net: no class named 'LeNet'"),
    ("unknown optimizer", lambda t, d: ["--model.optimizer", "Adamw"], "no class named 'Adamw'; did you mean AdamW?"),
    (
        "unknown scheduler",
        lambda t, d: ["--model.scheduler", "StepLr"],
        "no class named 'StepLr'; did you mean StepLR?",
    ),
    ("zero learning rate", lambda t, d: ["--model.optimizer.lr", "0"], "--model.optimizer.lr must be above 0, got 0"),
    ("negative learning rate", lambda t, d: ["--model.optimizer.lr", "-0.1"], "--model.optimizer: Invalid learning"),
    ("batch size 0", lambda t, d: ["--data.batch_size", "0"], "--data.batch_size must be at least 1, got 0"),
    (
        "label smoothing above 1",
        lambda t, d: ["--model.label_smoothing", "1.5"],
        "--model.label_smoothing must be between 0 and 1, got 1.5",
    ),
    ("val_size not below the training set", lambda t, d: ["--data.val_size", "600"], "--data.val_size 600 leaves no"),
    ("unknown data set", lambda t, d: ["--data.dataset", "cifar"], "--data.dataset: 'cifar' is not one of mnist,"),
    ("data missing, no network", lambda t, d: ["--data.data_dir", str(t / "empty")], "MNIST files not found"),
    (
        "IDX file truncated",
        lambda t, d: replace_bytes(raw(d) / "train-images-idx3-ubyte", lambda b: b[:-100]) or [],
        "train-images-idx3-ubyte is truncated or corrupt",
    ),
    (
        "wrong magic number",
        lambda t, d: replace_bytes(raw(d) / "t10k-labels-idx1-ubyte", lambda b: b"PK\x03\x04" + b[4:]) or [],
        "t10k-labels-idx1-ubyte",
    ),
    (
        "images and labels of different counts",
        lambda t, d: write_idx(raw(d) / "train-labels-idx1-ubyte", torch.zeros(599, dtype=torch.uint8)) and [],
        "600 images but",
    ),
    (
        "labels outside 0..9",
        lambda t, d: write_idx(raw(d) / "t10k-labels-idx1-ubyte", torch.full((200,), 12, dtype=torch.uint8)) and [],
        "label 12, outside 0..9",
    ),
    (
        "unwritable log folder",
        lambda t, d: ["--default_root_dir", str(d / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")],
        "cannot write logs to",
    ),  # fmt: skip
    ("more devices than exist", lambda t, d: ["--accelerator", "cpu", "--devices", "1000"], "--devices 1000 asks for"),
    ("unknown flag", lambda t, d: ["--max_epocs", "3"], "unknown option --max_epocs; did you mean --max_epochs?"),
    (
        "misspelled key in a YAML config",
        lambda t, d: ["--config", str(write(t / "typo.yaml", "trainer:\n  max_epoch: 3\n"))],
        "unknown key 'trainer.max_epoch' in a config file; did you mean trainer.max_epochs?",
    ),
    (
        "YAML that does not parse",
        lambda t, d: ["--config", str(write(t / "broken.yaml", "trainer:\n  max_epochs: [3\n"))],
        "a --config file is not valid YAML at line 3",
    ),
    (
        "config file that is not text",
        lambda t, d: ["--config", str(write_bytes(t / "utf16.yaml", "max_epochs: 1".encode("utf-16")))],
        "a --config file is not UTF-8 text ('utf-8' codec can't decode byte 0xff in position 0",
    ),
    ("config file missing", lambda t, d: ["--config", str(t / "nope.yaml")], "--config: file not found:"),
    (
        "unknown option of a net",
        lambda t, d: ["--model.net", "MLP", "--model.net.hidden_size", "64"],
        "--model.net: unknown option 'hidden_size'; did you mean hidden_sizes?",
    ),
    ("--ckpt_path to a missing file", lambda t, d: ["--ckpt_path", str(t / "no.ckpt")], "--ckpt_path"),
    (
        "--ckpt_path to a file that is not a checkpoint",
        lambda t, d: ["--ckpt_path", str(raw(d) / "t10k-labels-idx1-ubyte")],
        "--ckpt_path",
    ),
    (
        "--ckpt_path to a checkpoint of another network",
        lambda t, d: ["test", "--ckpt_path", str(mlp_checkpoint(t))],
        "the checkpoint was trained with a different network (this model has net.features.0.weight",
    ),
    (
        "--ckpt_path to a checkpoint that holds Python objects",
        lambda t, d: ["test", "--ckpt_path", str(code_checkpoint(t))],
        "refers to Python code (pathlib.PurePosixPath), which weights-only loading does not run",
    ),
    ("--ckpt_path to a folder", lambda t, d: ["test", "--ckpt_path", str(t)], "a folder, not a file. Checkpoints"),
    ("test --ckpt_path last with no run", lambda t, d: ["test", "--ckpt_path", "last"], "--ckpt_path last: no run"),
    ("negative max_epochs", lambda t, d: ["--max_epochs", "-3"], "`max_epochs` must be a non-negative integer or -1"),
    (
        "learning rate not a number",
        lambda t, d: ["--model.optimizer.lr", "abc"],
        "--model.optimizer.lr: 'abc' is not a",
    ),
    (
        "no end with a one-cycle schedule",
        lambda t, d: ["--max_epochs", "-1"],
        "the learning-rate schedule spans the whole run (OneCycle, warm-up + cosine), but the run has no end",
    ),
    (
        "subcommand after options",
        lambda t, d: ["--max_epochs", "1", "test"],
        "'test' after options is taken for an argument; a subcommand comes first: python train.py test [options]",
    ),
    ("non-finite loss", lambda t, d: ["--model.net", "nan_net.NanAfter"], "the training loss became nan at step 0"),
    ("image folder without test/", lambda t, d: folder(t, lambda f: shutil.rmtree(f / "test")), "has no test/ folder"),
    (
        "image folder without class folders",
        lambda t, d: folder(t, lambda f: [shutil.rmtree(c) for c in (f / "train").iterdir()]),
        "train has no images in class folders",
    ),
    (
        "empty class folder",
        lambda t, d: folder(t, lambda f: (f / "train" / "empty").mkdir()),
        "train/empty holds no images",
    ),
    (
        "test class that is not a training class",
        lambda t, d: folder(t, lambda f: (f / "test" / "blue cross").rename(f / "test" / "blue crosses")),
        "test/ has classes that train/ does not: blue crosses",
    ),
    (
        "unreadable image file",
        lambda t, d: folder(t, lambda f: (f / "train" / "green bar" / "0.png").write_text("not a picture")),
        "cannot read image ",
    ),
    (
        "image folder that is a file",
        lambda t, d: ["--data", "ImageFolderDataModule", "--data.data_dir", str(write(t / "pictures.zip", "zip"))],
        "pictures.zip is a file; give the folder that holds train/ and test/",
    ),
    ("max_epochs 0", lambda t, d: ["--max_epochs", "0"], "--max_epochs 0 trains nothing"),
    ("max_steps 0", lambda t, d: ["--max_steps", "0"], "--max_steps 0 trains nothing"),
    ("no training batches", lambda t, d: ["--limit_train_batches", "0"], "--limit_train_batches 0 trains nothing"),
    ("gradient accumulation 0", lambda t, d: ["--accumulate_grad_batches", "0"], "--accumulate_grad_batches must be"),
    ("validation every 0 batches", lambda t, d: ["--val_check_interval", "0"], "--val_check_interval must be above 0"),
    (
        "validation every 0 epochs",
        lambda t, d: ["--check_val_every_n_epoch", "0"],
        "--check_val_every_n_epoch must be above 0, got 0",
    ),
    ("test without a checkpoint", lambda t, d: ["test"], "test needs a trained model: pass --ckpt_path FILE, or last"),
    ("predict without a checkpoint", lambda t, d: ["predict"], "predict needs a trained model: pass --ckpt_path"),
    ("negative num_workers", lambda t, d: ["--data.num_workers", "-1"], "--data: num_workers option should be"),
    ("devices -1 on the CPU", lambda t, d: ["--accelerator", "cpu", "--devices", "-1"], "a Trainer option: `devices`"),
    (
        "test images of another size",
        lambda t, d: write_idx(raw(d) / "t10k-images-idx3-ubyte", torch.zeros(200, 32, 32, dtype=torch.uint8)) and [],
        "t10k-images-idx3-ubyte holds 32x32 images; mnist images are 28x28",
    ),
    (
        "data module without the data contract",
        lambda t, d: ["--data", "plain_data.Plain"],
        "data module Plain does not meet the data contract: it needs a `contract` attribute",
    ),
    (
        "a class path one module off",
        lambda t, d: ["--config", str(write(t / "p.yaml", "data: {class_path: project.data.ImageFolderDataModule}"))],
        "--data: project.data has no ImageFolderDataModule; it is project.data.folder.ImageFolderDataModule (or by its "
        "short name, ImageFolderDataModule)",
    ),
    (
        "a list of callbacks under the callbacks registry",
        lambda t, d: ["--config", str(write(t / "list.yaml", "callbacks:\n  - class_path: EarlyStopping\n"))],
        "callbacks: got list; it holds the callbacks by name (NAME: CLASS with options, or NAME: null to leave one "
        "out; the names are configs/train.yaml's); a list of callbacks goes under trainer.callbacks",
    ),
    (
        "callbacks by name under trainer.callbacks",
        lambda t, d: ["--config", str(write(t / "named.yaml", "trainer:\n  callbacks:\n    stop: EarlyStopping\n"))],
        "--trainer.callbacks: a list of callbacks (- class_path: CLASS, init_args: {...}), not callbacks by name; "
        "named entries (NAME: CLASS, or NAME: null) go into the top-level `callbacks:` registry",
    ),
    (
        "a new name in the callbacks registry of a config",
        lambda t, d: ["--config", str(write(t / "new.yaml", "callbacks:\n  early_stop: EarlyStopping\n"))],
        "unknown key 'callbacks.early_stop' in a config file: the callbacks registry has no 'early_stop' (its names, "
        "from configs/train.yaml: best_checkpoint, ",
    ),
    (
        "a misspelt name of the callbacks registry",
        lambda t, d: ["--callbacks.best_chekpoint", "null"],
        "unknown option --callbacks.best_chekpoint: the callbacks registry has no 'best_chekpoint'; did you mean "
        "best_checkpoint? (its names",
    ),
    (
        "a folder of pictures given to MNIST's data module",
        lambda t, d: (
            [(t / "pics" / "test").mkdir(parents=True), (t / "pics" / "train").mkdir()]
            and ["--data.data_dir", str(t / "pics")]
        ),  # fmt: skip
        "holds train/ and test/ folders, not MNIST's IDX files: a folder of pictures is read by ImageFolderDataModule",
    ),
    ("misspelt subcommand", lambda t, d: ["tset"], "unexpected argument 'tset'"),
    (
        "a number where a list goes",
        lambda t, d: ["--model.net.channels", "32"],
        "--model.net.channels: 32 is not a list",
    ),
    (
        "an option before its class",
        lambda t, d: ["--model.optimizer.momentum", "0.9", "--model.optimizer", "SGD"],
        "--model.optimizer.momentum comes before --model.optimizer SGD: give a class's options after it",
    ),
]


def folder(tmp: Path, change) -> list[str]:
    """An image folder of three classes, changed by `change`, as the data."""
    root = write_image_folder(tmp / "pictures")
    change(root)
    return ["--data", "ImageFolderDataModule", "--data.data_dir", str(root)]


PLAIN_DATA = """
import lightning as L

class Plain(L.LightningDataModule):
    pass  # says nothing about what it serves
"""
if not torch.cuda.is_available():
    CASES.append(("--accelerator gpu without a GPU", lambda t, d: ["--accelerator", "gpu"], "--accelerator gpu needs"))

NAN_NET = """
from project.models import MLP

class NanAfter(MLP):
    '''An MLP whose training output is NaN.'''
    def __init__(self) -> None:
        super().__init__(hidden_sizes=[16])

    def forward(self, images):
        return super().forward(images) * (float("nan") if self.training else 1.0)
"""
MESSAGES = {
    "misspelt subcommand": "did you mean test?",
    "--ckpt_path to a missing file": "no such file",
    "--ckpt_path to a file that is not a checkpoint": "is not a PyTorch checkpoint",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("mistake", "arguments", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(mistake, arguments, message, mnist_dir, tmp_path, capsys,
                                                      monkeypatch):  # fmt: skip
    monkeypatch.setattr(MNIST, "download", offline)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(write(tmp_path / "nan_net.py", NAN_NET).parent))
    write(tmp_path / "plain_data.py", PLAIN_DATA)
    args = arguments(tmp_path, mnist_dir)
    subcommand = args[:1] if args[:1] and not args[0].startswith("-") else []  # a first word (test, tset) first
    data_before = files(mnist_dir)
    logs = tmp_path / "logs"
    status = main([*subcommand, "--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs),
                   *FAST_TRAINER, *args[len(subcommand):]])  # fmt: skip

    assert status == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], lines  # one error line, the last one
    assert lines[-1].startswith(f"error: {message}") or message in lines[-1], lines[-1]
    assert MESSAGES.get(mistake, "") in lines[-1]
    assert not logs.exists() or not any(p.is_file() for p in logs.rglob("*")), sorted(logs.rglob("*"))
    assert files(mnist_dir) == data_before or mistake in MUTATED


MUTATED = {case[0] for case in CASES[9:13]} | {"test images of another size"}  # cases that break the data


def offline(self) -> None:
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error [Errno -3] no network>")


def test_the_reliability_table_lists_every_case():
    readme = (REPO / "docs" / "reliability.md").read_text()
    assert all(f"| {case[0]} |" in readme for case in CASES), [c[0] for c in CASES if f"| {c[0]} |" not in readme]


def test_a_real_process_prints_no_traceback_and_debug_shows_it(tmp_path):
    with ThreadPoolExecutor() as pool:  # the two processes side by side
        quiet, loud = pool.map(lambda debug: run_cli("--max_epocs", "3", *debug, "--default_root_dir", str(tmp_path)),
                               ([], ["--debug"]))  # fmt: skip
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == ["error: unknown option --max_epocs; did you mean --max_epochs?; "
                                                 "`python train.py --help` lists them all"]  # fmt: skip
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "UserError" in loud.stderr
    assert not any(tmp_path.iterdir())


ONE_PROCESS_FAILS = """
import os
from project.models import MLP

class FailsInProcess1(MLP):
    def forward(self, images):
        if os.environ.get("LOCAL_RANK") == "1":
            raise ValueError("only process 1 fails")
        return super().forward(images)
"""


@pytest.mark.slow
@pytest.mark.parametrize("who", ["process 0", "process 1", "both"])
def test_a_mistake_under_two_processes_is_one_line(mnist_dir, tmp_path, who):
    """Two processes (DDP on the CPU). Process 0 alone meets a picture folder given to MNIST's module (it prepares
    the data); process 1 alone a net that fails there only, which the start-up check hands to process 0 to name.
    The other, waiting, lost its connection and printed gloo's "Connection closed by peer" as a second error line.
    Both meet a validation slice larger than the data (600 images): each named it."""
    (tmp_path / "pics" / "train").mkdir(parents=True)
    (tmp_path / "pics" / "test").mkdir()
    write(tmp_path / "one_fails.py", ONE_PROCESS_FAILS)
    mistake, expected = {
        "process 0": (["--data.data_dir", str(tmp_path / "pics")], "holds train/ and test/ folders"),
        "process 1": (
            ["--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--model.net", "one_fails.FailsInProcess1"],
            "FailsInProcess1 failed on a float32 tensor of shape 2x1x28x28: ValueError: only process 1 fails",
        ),  # fmt: skip
        "both": (["--data.data_dir", str(mnist_dir)], "--data.val_size 5000 leaves no training images"),
    }[who]
    done = run_cli("--accelerator", "cpu", "--devices", "2", *mistake, "--default_root_dir", str(tmp_path / "logs"),
                   env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], errors
    assert done.stderr.strip().endswith(errors[0])


def test_each_parse_error_wording_is_still_recognized(tmp_path, monkeypatch):
    """jsonargparse words its errors in English only; project.run.parse_errors.explain reads that wording. Each
    case must still come out as the template's own line, not as jsonargparse's text passed through."""
    monkeypatch.syspath_prepend(str(tmp_path))  # a fork's module, needs.py, that imports what is not installed
    cases = {
        ("--max_epocs", "3"): "unknown option --max_epocs; did you mean --max_epochs?",
        ("--model.net", "LeNet"): "--model.net: no class named 'LeNet'; choose one of CNN, MLP or give a full",
        ("--model.optimizer.lr", "abc"): "--model.optimizer.lr: 'abc' is not a number",
        ("--data.dataset", "cifar"): "--data.dataset: 'cifar' is not one of mnist, fashion_mnist, kmnist",
        ("--model.net", "MLP", "--model.net.hidden_size", "8"): "--model.net: unknown option 'hidden_size'; did",
        ("--config", str(tmp_path / "nope.yaml")): "--config: file not found:",
        ("--config", str(write(tmp_path / "typo.yaml", "trainer:\n  max_epoch: 3\n"))): "unknown key 'trainer.max",
        ("--config", str(write(tmp_path / "bad.yaml", "a: [3\n"))): "a --config file is not valid YAML at line",
        ("--config", str(write(tmp_path / "empty.yaml", ""))): "a --config file holds no options (it is empty); write",
        ("--config", str(write(tmp_path / "list.yaml", "- 3\n"))): "a --config file holds no options (- 3); write",
        ("--max_epochs", "1", "test"): "'test' after options is taken for an argument",
        ("--model.optimizer", "SGD", "--model.optimizer.momentun", "0.9"): "--model.optimizer: unknown option "
        "'momentun'; did you mean momentum?",
        ("--model.optimizer.learning_rate", "0.1"): "--model.optimizer: unknown option 'learning_rate' (AdamW takes "
        "lr, betas, eps, weight_decay,",
        ("tset",): "unexpected argument 'tset': options start with --, and a subcommand (fit, test, ...) comes "
        "first; did you mean test?",
        ("--model.net.channels", "32"): "--model.net.channels: 32 is not a list; write one in brackets, as `python "
        "train.py --help` shows it",
        ("--model.optimizer.betas", "0.9"): "--model.optimizer.betas: 0.9 is not a list; write one",  # a tuple
        ("--model.net", "MLP", "--model.net.hidden_sizes", "512"): "--model.net.hidden_sizes: 512 is not a list",
        ("--model.net.channels", "[4,a]"): "--model.net.channels: 'a' is not a whole number",
        (
            "--config",
            str(
                write(
                    tmp_path / "item.yaml",
                    "model:\n  net:\n    class_path: CNN\n    init_args:\n      channels: [4, a]\n",
                )
            ),
        ): "--model.net.channels: 'a' is not a whole number",
        ("--data.image_size", "[8,8]", "--data", "ImageFolderDataModule", "--data.data_dir", "x"): "--data.image_size "
        "comes before --data ImageFolderDataModule: give a class's options after it",
        ("--model.net", "nomod.Good"): "--model.net: no module named 'nomod': a class of your own is named by its "
        "import path (my_project.module.ClassName), from a module beside train.py or in a folder on PYTHONPATH",
        ("--model.optimizer", "nomod.Fast"): "--model.optimizer: no module named 'nomod': a class of your own",
        ("--model.net", str(write(tmp_path / "my_nets.py", "class Good(nn.Module):\n    def f(self, x: int):\n"))): (
            f"--model.net: {tmp_path / 'my_nets.py'} is a file; name a class in it by its import path "
            f"(my_nets.ClassName, with {tmp_path} on PYTHONPATH)"
        ),
        ("--model.net", "nets/my_nets.py"): "--model.net: nets/my_nets.py is a file; name a class in it by its import "
        "path (nets.my_nets.ClassName)",
        ("--model.net", "tests.image_folders.NoSuchClass"): "--model.net: tests.image_folders has no NoSuchClass",
        ("--model.net", str(write(tmp_path / "needs.py", "import timm_not_installed\n")) and "needs.Net"): (
            "--model.net: needs.Net imports 'timm_not_installed', which is not installed"
        ),
        ("--model.net", "./my_nets.Good"): "--model.net: ./my_nets.Good is no import path; name a class as module",
        ("--model.optimizer.momentun", "0.9", "--model.optimizer", "SGD"): "--model.optimizer.momentun: SGD has no "
        "option 'momentun'; did you mean momentum?",  # a misspelling before its class: the new class's suggestion
        ("--model.net.hidden", "64", "--model.net.class_path", "MLP"): "--model.net.hidden: MLP has no option "
        "'hidden'; did you mean hidden_sizes?",
        ("--data", "ImageFolderDatamodule"): "--data: no class named 'ImageFolderDatamodule'; did you mean "
        "ImageFolderDataModule?; choose one of ImageFolderDataModule, MNISTDataModule or give a full import path",
    }
    for args, expected in cases.items():
        with pytest.raises(UserError) as error:
            RunCLI(["fit", *args], test_after_fit=True)  # as main() makes it of args; fails parsing: runs nothing
        changed = f"project.run.parse_errors.explain no longer recognizes jsonargparse's words for {args}"
        assert str(error.value).startswith(expected), f"{changed}: {error.value}"
    with pytest.raises(UserError) as error:
        RunCLI(["fit", "tset"])  # `train.py fit tset`: a subcommand came first, so tset is no misspelt one
    assert str(error.value) == "unexpected argument 'tset': options start with --, and a subcommand (fit, test, ...) " \
                               "comes first"  # fmt: skip


def test_an_option_the_class_switched_to_has_not_is_left_out_with_a_note(capsys, tmp_path):
    """Flags before a class switch carry over where the new class takes them; the others are named as left out
    (they were dropped without a word), whether a flag or a config file switches."""
    mlp = str(REPO / "configs" / "mlp.yaml")
    cases = {
        ("--model.optimizer.amsgrad", "true", "--model.optimizer.lr", "0.3", "--model.optimizer", "SGD"): (
            "note: --model.optimizer.amsgrad is left out: it came before --model.optimizer SGD, and SGD has no option "
            "'amsgrad'; `python train.py --model.optimizer SGD --help` lists its options"
        ),
        ("--model.net.hidden", "64", "-c", mlp): f"note: --model.net.hidden is left out: it came before -c {mlp}, and "
        "MLP has no option 'hidden' (did you mean hidden_sizes?); `python train.py -c",
    }
    configs = []
    for args, note in cases.items():
        configs.append(RunCLI([*args, "--default_root_dir", str(tmp_path)], run=False).config)
        assert capsys.readouterr().err.startswith(note)
    assert configs[0].model.optimizer.init_args.lr == 0.3  # what SGD takes carries on
    assert configs[1].model.net.class_path == "project.models.MLP"
    # Decided against the class finally chosen (Adam takes amsgrad), and init_args spelt out is the same option.
    args = ["--model.optimizer.amsgrad", "true", "--model.optimizer.init_args.lr", "0.3", "--model.optimizer", "SGD",
            "--model.optimizer", "Adam", "--default_root_dir", str(tmp_path)]  # fmt: skip
    optimizer = RunCLI(args, run=False).config.model.optimizer
    assert optimizer.init_args.amsgrad is True and optimizer.init_args.lr == 0.3
    assert "note:" not in capsys.readouterr().err
    RunCLI(["--model.optimizer", "SGD", "--model.optimizer.lr", "0.3", "--default_root_dir", str(tmp_path)], run=False)
    assert "note:" not in capsys.readouterr().err


def test_the_net_names_offered_are_those_of_project_models(monkeypatch):
    """A fork's own net, added to project.models, is among the names an unknown --model.net suggests."""
    import project.models

    monkeypatch.setattr(project.models, "LeNet5", type("LeNet5", (MLP,), {}), raising=False)
    with pytest.raises(
        UserError, match=r"no class named 'LeNet'; did you mean LeNet5\?; choose one of CNN, LeNet5, MLP"
    ):
        RunCLI(["fit", "--model.net", "LeNet"])

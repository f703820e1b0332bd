"""Training strategies (optimizers, schedules, regularization, losses, batching), each mechanism checked
against a value computed another way."""

from functools import partial

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from project.classifier import ImageClassifier
from project.data import MNISTDataModule
from project.models import CNN, MLP
from project.optim import OneCycle, WarmupCosine, parameter_groups
from tests.conftest import FAST_RUN, FAST_TRAINER, REPO, results, run_main


def trainer(**kwargs) -> L.Trainer:
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    return L.Trainer(**{**options, **kwargs})


def data(mnist_dir, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(mnist_dir), val_size=100, **kwargs)


def test_parameter_groups_by_prefix():
    net = MLP(hidden_sizes=[32])
    groups = parameter_groups(net, [{"prefix": "layers.3", "lr": 0.01, "momentum": 0.5}])
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    first, rest = optimizer.param_groups
    assert [id(p) for p in first["params"]] == [id(net.layers[3].weight), id(net.layers[3].bias)]
    assert (first["lr"], first["momentum"], first["name"]) == (0.01, 0.5, "layers.3")
    assert (rest["lr"], rest["momentum"], rest["name"]) == (0.1, 0.9, "default")
    assert len(rest["params"]) == 2  # layers.1 weight and bias keep the optimizer's options


def test_bias_and_norm_exempt_from_weight_decay():
    net = CNN(channels=[4, 8], hidden=16)
    groups = torch.optim.AdamW(parameter_groups(net, exempt_bias_and_norm=True), weight_decay=0.1).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    exempt = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed == {id(p) for p in net.parameters() if p.ndim >= 2}
    assert exempt == {id(p) for p in net.parameters() if p.ndim < 2}  # biases and batch-norm weights


def test_prefix_matching_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="param_groups: prefix 'head' matches no parameter.* start with layers"):
        parameter_groups(MLP(), [{"prefix": "head", "lr": 0.1}])


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5) and lrs[11] == pytest.approx(0.0381, abs=1e-3)


def test_one_cycle_counts_accumulated_steps(mnist_dir):
    """500 training images, batches of 25, 4 accumulated: 5 optimizer steps an epoch, 10 in 2 epochs."""
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (batch_idx + 1) % 4 == 0:
                seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = ImageClassifier(MLP(), optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=OneCycle)  # peak: lr
    trainer(max_epochs=2, accumulate_grad_batches=4, callbacks=[Record()]).fit(model, data(mnist_dir, batch_size=25))
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    expected_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=10)
    expected = []
    for _ in range(10):
        reference.step()
        expected_schedule.step()
        expected.append(reference.param_groups[0]["lr"])
    assert seen == pytest.approx(expected[: len(seen)]) and len(seen) == 10


def test_one_cycle_peaks_at_each_parameter_group_lr():
    """project.optim.OneCycle is torch's OneCycleLR with max_lr taken from the optimizer: the same rates."""

    def optimizer():
        return torch.optim.SGD(
            [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (0.01, 0.1)], momentum=0.9
        )

    ours, theirs = optimizer(), optimizer()
    theirs_schedule = torch.optim.lr_scheduler.OneCycleLR(theirs, [0.01, 0.1], 10, cycle_momentum=False)
    schedules = OneCycle(ours, total_steps=10), theirs_schedule
    rates = []
    for _ in range(10):
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
        rates.append(ours.param_groups[1]["lr"])
        for each, schedule in zip((ours, theirs), schedules, strict=True):
            each.step()
            schedule.step()
    assert rates[0] == pytest.approx(0.1 / 25) and max(rates) == pytest.approx(0.1)


def test_l1_penalty_is_coefficient_times_sum_of_absolute_weights():
    torch.manual_seed(0)
    model = ImageClassifier(MLP(hidden_sizes=[16]), l1=0.01, label_smoothing=0.0)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    loss = model.training_step((images, labels), 0)
    expected = F.cross_entropy(model(images), labels) + 0.01 * sum(p.abs().sum() for p in model.net.parameters())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mse_loss_on_one_hot_targets():
    model = ImageClassifier(MLP(), loss="mse")
    logits, labels = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 5])
    expected = ((logits.softmax(1) - F.one_hot(labels, 10).float()) ** 2).mean()
    assert model.criterion(logits, labels).item() == pytest.approx(expected.item())


def test_label_smoothing():
    model = ImageClassifier(MLP(), label_smoothing=0.1)
    logits, labels = torch.randn(6, 10), torch.arange(6)
    log_p = logits.log_softmax(1)
    expected = (-(0.9 * log_p.gather(1, labels[:, None]).squeeze(1)) - 0.1 * log_p.mean(1)).mean()
    assert model.criterion(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_evaluation_loss_is_a_mean_over_images_not_batches(mnist_dir):
    """The 200 test images in batches of 128 and 72: the logged loss is that of the 200 at once (a mean of the two
    batches' means counted the 72 as much as the 128, and two processes sharing the images differently disagreed)."""
    model, dm = ImageClassifier(MLP(hidden_sizes=[16])), data(mnist_dir, batch_size=128)
    logged = trainer().test(model, dm, verbose=False)[0]["test/loss"]
    batches = [dm.on_after_batch_transfer(batch, 0) for batch in dm.test_dataloader()]  # normalized, as tested
    assert [len(labels) for _, labels in batches] == [128, 72]
    with torch.no_grad():
        logits, labels = torch.cat([model(images) for images, _ in batches]), torch.cat([y for _, y in batches])
    assert logged == pytest.approx(model.criterion(logits, labels).item(), rel=1e-6)


def weights_after_one_step(mnist_dir, batch_size: int, accumulate: int) -> list[torch.Tensor]:
    L.seed_everything(3)
    model = ImageClassifier(MLP(hidden_sizes=[32]), optimizer=partial(torch.optim.SGD, lr=0.5))
    trainer(max_steps=1, accumulate_grad_batches=accumulate).fit(model, data(mnist_dir, batch_size=batch_size))
    return [p.detach().clone() for p in model.parameters()]


def test_accumulating_4_batches_of_16_equals_one_batch_of_64(mnist_dir):
    one = weights_after_one_step(mnist_dir, 64, 1)
    accumulated = weights_after_one_step(mnist_dir, 16, 4)
    for a, b in zip(one, accumulated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    L.seed_everything(3)
    initial = [p.detach() for p in ImageClassifier(MLP(hidden_sizes=[32])).parameters()]
    assert not torch.equal(initial[0], one[0])  # the step did change the weights


class Observe(L.Callback):
    """Records, per stage, the net's mode, whether gradients are on, and the batches it receives."""

    def __init__(self):
        self.seen = {}

    def _note(self, stage, pl_module, batch):
        self.seen.setdefault(stage, []).append((pl_module.net.training, torch.is_grad_enabled(), batch[0].clone()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._note("train", pl_module, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._note("val", pl_module, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._note("test", pl_module, batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._note("predict", pl_module, batch)


def test_train_and_eval_modes(mnist_dir):
    """Dropout on only while training; batch-norm statistics untouched by evaluation; no gradients there."""
    observe = Observe()
    model = ImageClassifier(CNN(channels=[4, 8], hidden=16, dropout=0.5, batch_norm=True))
    dm = data(mnist_dir, batch_size=50)
    run = trainer(max_epochs=1, limit_val_batches=2, limit_train_batches=2, callbacks=[observe])
    run.fit(model, dm)
    bn = next(m for m in model.net.features if isinstance(m, nn.BatchNorm2d))
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    run.validate(model, dm)
    run.test(model, dm)
    run.predict(model, dm)
    after = (bn.running_mean, bn.running_var, bn.num_batches_tracked)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert {(mode, grad) for mode, grad, _ in observe.seen["train"]} == {(True, True)}
    for stage in ("val", "test", "predict"):
        assert {(mode, grad) for mode, grad, _ in observe.seen[stage]} == {(False, False)}, stage
    # Dropout really acts: in training mode the same input gives different outputs, in eval mode the same.
    x = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_augmentation_changes_training_batches_only(mnist_dir):
    observe = Observe()
    dm = data(mnist_dir, batch_size=50, augment=True, rotation=15, translate=0.1)
    run = trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, callbacks=[observe])
    run.fit(ImageClassifier(MLP()), dm)
    run.test(ImageClassifier(MLP()), dm)
    raw_train = dm.normalize(dm.train_set.tensors[0])
    val_batches = [b for _, _, b in observe.seen["val"]]
    assert torch.equal(torch.cat(val_batches), dm.normalize(dm.val_set.tensors[0][:100]))
    assert torch.equal(observe.seen["test"][0][2], dm.normalize(dm.test_set.tensors[0][:50]))
    for _, _, batch in observe.seen["train"]:
        # No augmented image is a plain training image, yet pixel values stay in the normalized range.
        assert not any(torch.equal(image, plain) for image in batch[:5] for plain in raw_train)
        assert batch.min() >= raw_train.min() - 1e-4 and batch.max() <= raw_train.max() + 1e-4


@pytest.mark.parametrize(
    ("dataset", "flip", "mirrors"),
    [("fashion_mnist", True, True), ("fashion_mnist", False, False), ("mnist", True, False), ("kmnist", True, False)],
)
def test_augmentation_mirrors_clothes_but_never_digits_or_kana(mnist_dir, dataset, flip, mirrors):
    observe = Observe()  # no rotation, shift or zoom: what is left of the augmentation is the mirroring
    dm = MNISTDataModule(dataset=dataset, data_dir=str(mnist_dir / "MNIST" / "raw"), val_size=100, batch_size=100,
                         augment=True, rotation=0.0, translate=0.0, scale=(1.0, 1.0), flip=flip)  # fmt: skip
    trainer(max_epochs=1, limit_train_batches=3, callbacks=[observe]).fit(ImageClassifier(MLP()), dm)
    plain = dm.normalize(dm.train_set.tensors[0]).flatten(1)
    batches = torch.cat([batch for _, _, batch in observe.seen["train"]])

    def is_plain(images):  # each image within rounding of some training image
        return torch.cdist(images.flatten(1), plain, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1) < 1e-3

    as_is, mirrored = is_plain(batches), is_plain(batches.flip(-1))
    assert bool((as_is | mirrored).all()) and not bool((as_is & mirrored).any())
    assert 100 < int(mirrored.sum()) < 200 if mirrors else int(mirrored.sum()) == 0


@pytest.mark.parametrize(
    ("dataset", "eval_flip", "mirrors"),
    [("fashion_mnist", True, True), ("fashion_mnist", False, False), ("mnist", True, False)],
)
def test_eval_flip_averages_each_image_with_its_mirror_where_the_data_allows(mnist_dir, dataset, eval_flip, mirrors):
    dm = MNISTDataModule(dataset=dataset, data_dir=str(mnist_dir / "MNIST" / "raw"), val_size=100, batch_size=50)
    model = ImageClassifier(CNN(channels=[4], hidden=8), eval_flip=eval_flip)
    run = trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    run.fit(model, dm)
    probabilities = torch.cat(run.predict(model, dm))
    # Computed another way: the plain net on the test images as they are, and mirrored.
    images = dm.normalize(dm.test_set.tensors[0][: len(probabilities)])
    with torch.no_grad():
        plain, mirrored = model.net.eval()(images), model.net(images.flip(-1))
    expected = ((plain + mirrored) / 2 if mirrors else plain).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-5)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the net does tell an image from its mirror


NAN_NET = """
import torch
from torch import nn
from project.models import MLP


class NanAfter(MLP):
    '''An MLP whose output turns to NaN after a number of training forward passes.'''

    def __init__(self, after: int = 5) -> None:
        super().__init__(hidden_sizes=[16])
        self.after, self.calls = after, 0

    def forward(self, images):
        if self.training:
            self.calls += 1
        out = super().forward(images)
        return out * float("nan") if self.training and self.calls > self.after else out
"""


def test_non_finite_loss_stops_with_a_reason_and_keeps_the_last_checkpoint(mnist_dir, tmp_path, monkeypatch):
    (tmp_path / "nan_after_net.py").write_text(NAN_NET)  # a name of its own: modules stay imported
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *FAST_RUN]
    done = run_main("--model.net", "nan_after_net.NanAfter", "--model.net.after", "4", *args, "--max_epochs", "3")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the training loss became nan at step 4 (epoch 1)")
    assert "learning rate too high" in last and "--gradient_clip_val" in last and "last.ckpt" in last
    ckpt = torch.load(last.rsplit(" ", 1)[1], weights_only=True)
    assert ckpt["global_step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


# Every train.py recipe (configs/search/ holds tune.py's search spaces, tested in tests/extras/test_tune.py).
RECIPES = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "search")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs(recipe, mnist_dir, tmp_path):
    # On the synthetic MNIST files, but for a recipe of a fork's own data (another data module): on that data.
    data = (yaml.safe_load((REPO / recipe).read_text()) or {}).get("data")
    own_data = isinstance(data, dict) and "MNIST" not in str(data.get("class_path", "MNIST"))
    where = [] if own_data else ["--data.data_dir", str(mnist_dir)]
    done = run_main("--config", recipe, *where, "--default_root_dir", str(tmp_path),
                    *FAST_RUN, "--model.compile", "false", "--precision", "32")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test/acc" in results(tmp_path)["metrics"]


def test_learning_rate_finder(mnist_dir, tmp_path, capsys):
    from PIL import Image

    from project.extras.lr_find import main as lr_find
    from tests.conftest import read_events, run_folder

    args = ["--model.net", "MLP", "--data.data_dir", str(mnist_dir), "--data.val_size", "100"]
    assert lr_find([*args, "--data.batch_size", "32", "--default_root_dir", str(tmp_path), "--num_training", "20"]) == 0
    stdout = capsys.readouterr().out
    line = next(x for x in stdout.splitlines() if x.startswith("suggested learning rate: "))
    assert 1e-6 <= float(line.rsplit(" ", 1)[1]) <= 1.0
    folder = run_folder(tmp_path)
    assert Image.open(folder / "lr_find.png").size[0] >= 400
    other: dict = {}
    read_events(folder, other)
    assert "lr_find" in other["images"]


def test_group_learning_rates_are_logged_separately(mnist_dir, tmp_path):
    from tests.conftest import read_events, run_folder

    done = run_main("--config", "configs/optimizers/param_groups.yaml", "--data.data_dir", str(mnist_dir),
                    "--default_root_dir", str(tmp_path), *FAST_TRAINER)  # fmt: skip
    assert done.returncode == 0, done.stderr
    scalars, _ = read_events(run_folder(tmp_path))
    assert scalars["lr-SGD/features"] == pytest.approx([0.005] * 3)
    assert scalars["lr-SGD/default"] == pytest.approx([0.05] * 3)


def test_plateau_schedule_is_returned_with_its_monitor():
    from lightning.pytorch.cli import ReduceLROnPlateau

    plateau = partial(ReduceLROnPlateau, monitor="val/acc", mode="max", patience=1)
    model = ImageClassifier(MLP(), optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=plateau)
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/acc"
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    plain = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min")
    assert ImageClassifier(MLP(), scheduler=plain).configure_optimizers()["lr_scheduler"]["monitor"] == "val/loss"


def test_one_cycle_leaves_the_optimizers_momentum_alone():
    sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # plain SGD: momentum 0
    OneCycle(sgd, total_steps=10)
    assert sgd.param_groups[0]["momentum"] == 0
    adam = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.1, betas=(0.8, 0.99))
    OneCycle(adam, total_steps=10)
    assert adam.param_groups[0]["betas"] == (0.8, 0.99)

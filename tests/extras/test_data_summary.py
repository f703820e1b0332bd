"""The data a run trains on, shown once as the fit starts: classes and pictures per split, a note for a class far
smaller than the others, and the same table in TensorBoard's text tab."""

from project.extras.data_summary import summary, unvalidated
from project.run.resume import events
from tests.conftest import FAST_TRAINER, run_folder, run_main
from tests.image_folders import CLASSES, write_image_folder


def test_an_image_folder_run_shows_its_classes_counts_and_a_small_class(tmp_path):
    pictures = write_image_folder(tmp_path / "pictures", per_class=24)
    for extra in sorted((pictures / "train" / CLASSES[0]).iterdir())[4:]:  # 4 training pictures left in class 0
        extra.unlink()
    done = run_main("--data", "ImageFolderDataModule", "--data.data_dir", str(pictures), "--default_root_dir",
                    str(tmp_path / "logs"), *FAST_TRAINER, "--data.val_size", "0.25")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    start = lines.index("data: 3 classes, 39 train, 13 val, 36 test pictures")
    rows = {" ".join(line.split()[:-3]): [int(n) for n in line.split()[-3:]] for line in lines[start + 2 : start + 5]}
    on_disk = {name: len(list((pictures / "train" / name).iterdir())) for name in CLASSES}
    assert {name: train + val for name, (train, val, _) in rows.items()} == on_disk  # the held-out slice too
    assert {name: test for name, (*_, test) in rows.items()} == dict.fromkeys(CLASSES, 12)
    assert f"note: class {CLASSES[0]!r} has {rows[CLASSES[0]][0]} training pictures, the median class" in done.stderr
    assert sum(f"note: class {name!r}" in done.stderr for name in CLASSES) == 1
    texts = [v for e in events(run_folder(tmp_path / "logs")) for v in e.summary.value if v.tag.startswith("data")]
    assert len(texts) == 1 and CLASSES[1] in texts[0].tensor.string_val[0].decode()


def test_many_classes_are_one_line_with_the_range_of_their_counts():
    classes = [f"c{i}" for i in range(30)]
    line = summary(classes, {"train": list(range(1, 31)), "test": [5] * 30}, rows=20)
    assert line == "data: 30 classes, 465 train, 150 test pictures; per class: train 1-30, test 5-5"


def test_a_class_with_no_validation_pictures_is_noted():
    counts = {"train": [50, 8, 40], "val": [5, 0, 4], "test": [20, 20, 20]}
    assert unvalidated(["a", "b", "c"], counts) == [
        "class 'b' has no validation pictures: val/acc and the choice of the best checkpoint leave it out; give it "
        "more pictures, a larger --data.val_size, or a val/ folder"
    ]
    assert unvalidated(["a", "b", "c"], {"train": [50, 8, 40], "test": [20, 20, 20]}) == []  # no validation at all

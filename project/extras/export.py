"""Export a checkpoint's network to ONNX and TorchScript, checked on the spot against PyTorch.

    python -m project.extras.export logs/mnist_cnn/version_0/checkpoints/last.ckpt [--out DIR]

Writes DIR/model.onnx, DIR/model.pt (TorchScript) and DIR/preprocessing.json (mean, std, class names: the
exported net takes images normalized like training batches, shape (N, 1, 28, 28), and returns logits).
DIR defaults to the run folder's export/. ONNX needs `pip install -e ".[onnx]"`; with onnxruntime installed
the ONNX file is also run and compared.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from project.classifier import ImageClassifier
from project.data import DATASETS
from project.errors import UserError, fail
from project.resume import read_checkpoint


def export(ckpt_path: Path, out: Path, batch: int = 16) -> dict[str, float]:
    """Write the exports and return the largest absolute difference of each from the PyTorch net."""
    checkpoint = read_checkpoint(ckpt_path, option="checkpoint")
    model = ImageClassifier.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    net = model.net
    images = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(images)
    out.mkdir(parents=True, exist_ok=True)
    differences = {"torchscript": export_torchscript(net, images, expected, out / "model.pt")}
    onnx = export_onnx(net, images, expected, out / "model.onnx")
    if onnx is not None:
        differences["onnx"] = onnx
    dataset = (checkpoint.get("datamodule_hyper_parameters") or {}).get("dataset", "mnist")
    info = DATASETS[dataset]
    (out / "preprocessing.json").write_text(
        json.dumps({"dataset": dataset, "mean": info.mean, "std": info.std, "classes": info.classes,
                    "input": "float32 (N, 1, 28, 28): (pixel / 255 - mean) / std", "output": "logits (N, classes)"},
                   indent=2) + "\n"
    )  # fmt: skip
    return differences


def export_torchscript(net: torch.nn.Module, images: torch.Tensor, expected: torch.Tensor, path: Path) -> float:
    with warnings.catch_warnings():
        # torch deprecates torch.jit (FutureWarning); tracing still serves plain nets well: that category, there only.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        traced = torch.jit.trace(net, images)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return (loaded(images) - expected).abs().max().item()


def export_onnx(net: torch.nn.Module, images: torch.Tensor, expected: torch.Tensor, path: Path) -> float | None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        print('skipped ONNX: install the extra with pip install -e ".[onnx]"', file=sys.stderr)
        return None
    batch = torch.export.Dim("batch")
    # external_data=False: the weights inside model.onnx, one file to ship (torch's default writes them to a
    # model.onnx.data beside it, without which model.onnx does not load).
    torch.onnx.export(net, (images,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False,
                      external_data=False)  # fmt: skip
    try:
        import onnxruntime
    except ImportError:
        print(f"wrote {path}; not checked: onnxruntime is not installed", file=sys.stderr)
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    return float(abs(torch.from_numpy(logits) - expected).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_path", type=Path, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, help="output folder (default: the run folder's export/)")
    args = parser.parse_args(argv)
    out = args.out or args.ckpt_path.resolve().parent.parent / "export"
    try:
        differences = export(args.ckpt_path, out)
    except UserError as error:
        return fail(str(error))
    for name, difference in differences.items():
        print(f"{name}: max |difference| from PyTorch on a batch of 16 = {difference:.2e}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a checkpoint's network to ONNX and torch.export, each checked on the spot against the PyTorch net.

    python -m project.extras.export logs/mnist_cnn/version_0/checkpoints/last.ckpt [--out DIR]

Writes DIR/model.onnx, DIR/model.pt2 (a torch.export ExportedProgram: torch.export.load(path).module()) and
DIR/preprocessing.json (the data contract: class names, input shape, mean and std per channel). The exported net
takes float32 images (N, C, H, W) normalized as (pixel / 255 - mean) / std and returns logits (N, classes). DIR
defaults to the run folder's export/ (export/ beside a checkpoint that is not in a run folder). Each file is
written whole or not at all. ONNX needs
`pip install -e ".[onnx]"`; with onnxruntime installed the ONNX file is also run and compared.
"""

import argparse
import io
import json
import signal
import sys
from pathlib import Path

from project.run import signals

if __name__ == "__main__":
    signals.note_stop_signals()  # a stop while torch loads: noted, said in one line by main()

import torch  # noqa: E402

from project.classifier import ImageClassifier  # noqa: E402
from project.data import DATASETS  # noqa: E402
from project.errors import UserError  # noqa: E402
from project.extras.atomic import verify, write_together  # noqa: E402
from project.run.errors import explain_failure, fail, missing_extra  # noqa: E402
from project.run.options import expand  # noqa: E402
from project.run.resume import read_checkpoint, run_folder_of  # noqa: E402
from project.run.signals import EARLY_STOPS, STOP_SIGNALS, Stopped, stop_now  # noqa: E402


def export(ckpt_path: Path, out: Path, batch: int = 16) -> dict[str, float]:
    """Write the exports and return the largest absolute difference of each from the PyTorch net."""
    checkpoint = read_checkpoint(ckpt_path, option="checkpoint")
    verify(checkpoint, ckpt_path)
    if "net" not in checkpoint.get("hyper_parameters", {}):  # a model built in Python keeps only the net's weights
        raise UserError(f"checkpoint {ckpt_path} does not name its net (a model built in Python keeps only its "
                        "weights): load it with ImageClassifier.load_from_checkpoint(path, net=...) and export the "
                        "net in Python (project.extras.export.export_program), or train it with train.py")  # fmt: skip
    model = ImageClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True).eval()
    contract = model.hparams.get("contract") or {**vars(DATASETS["mnist"].contract)}  # older checkpoints: MNIST's
    images = torch.randn(batch, *contract["shape"], generator=torch.Generator().manual_seed(0))
    net = model.net.to(memory_format=torch.contiguous_format)  # trained channels-last: exported in plain layout
    with torch.no_grad():
        expected = net(images)
    files, differences = {}, {}
    files[out / "model.pt2"], differences["torch.export"] = export_program(net, images, expected)
    onnx = export_onnx(net, images, expected, out / "model.onnx")
    if onnx is not None:
        files[out / "model.onnx"] = onnx[0]
        differences |= {"onnx": onnx[1]} if onnx[1] is not None else {}
    shape = "x".join(map(str, contract["shape"]))
    preprocessing = {**{k: list(v) if isinstance(v, tuple) else v for k, v in contract.items()},
                     "input": f"float32 (N, {shape.replace('x', ', ')}): (pixel / 255 - mean) / std per channel",
                     "output": "logits (N, classes)"}  # fmt: skip
    files[out / "preprocessing.json"] = (json.dumps(preprocessing, indent=2) + "\n").encode()
    write_together(files)  # torch's own file writers abort the process on a full disk: each file made in memory
    return differences


def batch_dimension() -> dict[str, dict[int, torch.export.Dim]]:
    return {"images": {0: torch.export.Dim("batch")}}


def export_program(net: torch.nn.Module, images: torch.Tensor, expected: torch.Tensor) -> tuple[bytes, float]:
    """torch.export (TorchScript's successor) as the bytes of a .pt2 file, loaded back and compared."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(net, (images,), dynamic_shapes=batch_dimension()), buffer)
    buffer.seek(0)
    with torch.no_grad():
        difference = (torch.export.load(buffer).module()(images) - expected).abs().max().item()
    return buffer.getvalue(), difference


def export_onnx(net: torch.nn.Module, images: torch.Tensor, expected: torch.Tensor, path: Path
                ) -> tuple[bytes, float | None] | None:  # fmt: skip
    """The ONNX file's bytes, run and compared where onnxruntime is installed; None without the onnx extra."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as missing:  # not installed, or an install that does not import
        print(f"note: no ONNX file: {missing_extra(missing, 'onnx')}", file=sys.stderr)
        return None
    program = torch.onnx.export(net, (images,), input_names=["images"], output_names=["logits"],
                                dynamic_shapes=batch_dimension(), dynamo=True, verbose=False)  # fmt: skip
    model = program.model_proto.SerializeToString()  # the weights inside: one file to ship
    difference = None
    try:
        import onnxruntime
    except ImportError:
        print(f"writing {path}; not checked: onnxruntime is not installed", file=sys.stderr)
    else:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": images.numpy()})
        difference = float(abs(torch.from_numpy(logits) - expected).max())
    return model, difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_path", type=Path, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, help="output folder (default: the run folder's export/)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    args.ckpt_path, args.out = Path(expand(str(args.ckpt_path))), args.out and Path(expand(str(args.out)))  # ~, $VARS
    run = run_folder_of(args.ckpt_path.resolve())  # a checkpoint away from its run folder: export/ beside it
    out = args.out or (run or args.ckpt_path.resolve().parent) / "export"
    handlers = {stop: signal.signal(stop, stop_now) for stop in STOP_SIGNALS}  # a stop: one line, as train.py's
    try:
        for signum in EARLY_STOPS[:1]:  # noted while torch loaded
            stop_now(signum, None)
        differences = export(args.ckpt_path, out)
    except Stopped as stop:
        name, written = signal.Signals(stop.code - 128).name, getattr(stop, "written", False)
        what = f"the new export in {out} is whole" if written else f"nothing written ({out} as it was)"
        print(f"{name}: stopped, {what}; run the same command again", file=sys.stderr)
        return stop.code
    except Exception as error:  # one line, as train.py's: a full disk, a damaged checkpoint, ...
        if args.debug:
            raise
        return fail(explain_failure(error))
    finally:
        for stop, handler in handlers.items():  # a Python caller gets its own back
            signal.signal(stop, handler)
    for name, difference in differences.items():
        print(f"{name}: max |difference| from PyTorch on a batch of 16 = {difference:.2e}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

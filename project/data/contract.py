"""The data contract: what a data module serves, so that nothing else guesses it (the net's size, the class names
in pictures and predictions, the example input and preprocessing of an export). A data module meets it with a
`contract` attribute (or property) holding a DataContract; the CLI links it into the model, whose checkpoint keeps
it (hyper-parameter `contract`)."""

from dataclasses import asdict, dataclass, fields

from project.errors import UserError

# What the model and its net take from the contract (a net without such an argument is left alone): the CLI links
# them from the built data module, so no config states them.
CONTRACT_LINKS = {"model.contract": None, "model.num_classes": "classes", "model.net.init_args.num_classes": "classes",
                  "model.net.init_args.input_shape": "shape"}  # fmt: skip


@dataclass(frozen=True)
class DataContract:
    """What a data module serves: images (N, *shape), normalized as (pixel / 255 - mean) / std per channel.

    Args:
        classes: the class names, in label order (label i is classes[i]).
        shape: (channels, height, width) of the images the net receives.
        mean: per channel, of the training pixels scaled to 0..1.
        std: per channel, of the training pixels scaled to 0..1.
        mirrorable: whether a mirrored image keeps its class (a shirt does, a digit does not)."""

    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirrorable: bool = False

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(self.shape) != 3 or not len(self.mean) == len(self.std) == self.shape[0]:
            raise ValueError(f"a DataContract needs 2 or more classes, a (channels, height, width) shape and a mean "
                             f"and std per channel; got {self}")  # fmt: skip


def contract_of(datamodule) -> dict:
    """The data module's contract as plain data (as a checkpoint keeps it), or a one-line UserError saying what
    is missing."""
    contract = getattr(datamodule, "contract", None)
    if not isinstance(contract, DataContract):
        got = ("has none when it is built (set it in __init__, or as a property of __init__'s arguments: the CLI "
               "links it before setup() runs)") if contract is None else f"has a {type(contract).__name__}"  # fmt: skip
        names = ", ".join(field.name for field in fields(DataContract))
        raise UserError(f"data module {type(datamodule).__name__} does not meet the data contract: it needs a "
                        f"`contract` attribute, a project.data.DataContract({names}), and {got}")  # fmt: skip
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(contract).items()}

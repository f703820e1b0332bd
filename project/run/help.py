"""`python train.py --help`: one line per option of the classes this run is built from, with the value this run
will use and the first sentence of the option's documentation."""

import inspect
import json
import re
import textwrap

import docstring_parser
from jsonargparse import Namespace
from lightning import Trainer

from project.classifier import ImageClassifier
from project.data.contract import CONTRACT_LINKS
from project.run.options import CLASS_KEYS, import_class, own_parameters

DESCRIPTION = """Train and test an image classifier. Without a subcommand: fit, then test the best checkpoint.
`python train.py fit|validate|test|predict [options]` runs one Lightning stage. Trainer options work flat
(--max_epochs 3) and prefixed (--trainer.max_epochs 3). An error prints one line; --debug shows its traceback."""
FIRST_SENTENCE = re.compile(r"(?<!e\.g)(?<!i\.e)\. ")  # up to its first full stop, not an "e.g."
WIDTH = 118  # of a line, but where an option's value alone is longer
LINKED = {target.replace(".init_args", "") for target in CONTRACT_LINKS}  # set from the built data module


def help_text(config: Namespace) -> str:
    """One line per option of the classes this run is built from: the value this run will use, the option's doc."""
    trainer = ("Trainer options (flat, or as --trainer.NAME)", "", Trainer, config.trainer, {"callbacks", "logger"})
    model = ("--model ImageClassifier", "model", ImageClassifier, config.model, {"net", "optimizer", "scheduler"})
    sections = [trainer, model]
    for key in (*CLASS_KEYS, *(f"callbacks.{name}" for name in vars(config.callbacks))):
        if isinstance(value := config.get(key), Namespace):
            title, values = f"--{key} {value.class_path}", value.get("init_args") or Namespace()
            sections.append((title, key, import_class(value.class_path), values, {"params", "optimizer"}))
    lines = ["usage: python train.py [fit|validate|test|predict] [--config FILE ...] [options]", "", DESCRIPTION]
    for title, key, cls, values, skip in sections:
        lines += ["", f"{title}:"]
        docs = [doc for klass in reversed(cls.__mro__) for doc in docstring_parser.parse(  # the nearest class's wins
            f"{inspect.getdoc(klass) or ''}\n\n{inspect.getdoc(klass.__init__) or ''}").params]  # fmt: skip
        first_sentences = {
            doc.arg_name: FIRST_SENTENCE.split(doc.description or "")[0].replace("\n", " ") for doc in docs
        }
        for name, parameter in own_parameters(cls).items():
            if name not in skip and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                shown = json.dumps(values.get(name, parameter.default), default=as_text)
                shown = "(the data's)" if f"{key}.{name}" in LINKED else shown  # not known before the data is read
                option = f"{f'  --{key}.{name}' if key else f'  --{name}'} {shown}"
                room = WIDTH - 1 - max(len(option), 50)  # the description cut at a word, or left out for a long value
                about = textwrap.shorten(first_sentences.get(name, ""), room, placeholder=" ...") if room >= 20 else ""
                lines.append(f"{option:<50} {about}".rstrip())
    off = [name for name, value in vars(config.callbacks).items() if value is None]
    lines += ["", f"Callbacks that are off (--callbacks.NAME CLASS puts one in): {', '.join(off)}", ""]
    return "\n".join(lines)


def as_text(value) -> str:
    """A class by its path, a function by its import path: as a config file names them."""
    if isinstance(value, Namespace):
        return value.get("class_path", str(value))
    return f"{value.__module__}.{value.__qualname__}" if callable(value) else str(value)

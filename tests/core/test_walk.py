"""docs/walk.md names files, functions and their lines in the order a training step runs them: each must be
there, at those lines."""

import ast
import re

from tests.conftest import REPO

# `file` `name` (lines a-b), or `name` (lines a-b) in the file named last before it.
STOP = re.compile(r"(?:`([\w/]+\.py)` )?`([\w.<>]+)` \(lines (\d+)-(\d+)\)")


def lines_of(file: str, name: str) -> tuple[int, int]:
    """The first and last line of a function or class (Class.method) in a file; <module>: the whole file."""
    text = (REPO / file).read_text()
    if name == "<module>":
        return 1, len(text.splitlines())
    nodes, node = ast.parse(text).body, None
    for part in name.split("."):
        node = next(n for n in nodes if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == part)
        nodes = node.body
    return min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.end_lineno


def test_every_stop_of_the_code_walk_names_a_function_at_its_lines():
    text, file, wrong = (REPO / "docs" / "walk.md").read_text(), None, []
    stops = STOP.findall(" ".join(text.split()))
    assert len(stops) >= 40 and "(lines ?)" not in text
    for named_file, name, first, last in stops:
        file = named_file or file
        try:
            found = lines_of(file, name)
        except StopIteration:
            wrong.append(f"{file} has no {name}")
            continue
        if found != (int(first), int(last)):
            wrong.append(f"{file} {name} is at lines {found[0]}-{found[1]}, not {first}-{last}")
    assert wrong == [], "docs/walk.md is out of date: " + "; ".join(wrong)

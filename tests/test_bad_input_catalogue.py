"""`docs/bad-input.md` lists at least 100 kinds of bad input, each backed by a test that exists.

Pure Python (no TensorFlow): the table's rows are parsed, and each row's pytest node id is
checked against the test file's syntax tree. A `[param-id]` suffix must be an id pytest would
form for that test: the ids of its `parametrize` decorators (the one nearest the function first)
joined by `-`, each from `pytest.param(..., id=...)`, an `ids=` list, or the parameter values
(strings and numbers as themselves, functions and classes by name, anything else as the
argument's name and index). Values that cannot be read statically (a computed list) may give any
string literal of the file.
"""

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "bad-input.md"
COLUMNS = ["#", "area", "entry point", "input", "what the user gets", "test"]
SHARED = re.compile(r"shared with #(\d+): \S")


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def catalogue_rows():
    """`[(number, cells)]` of every table row whose first cell is a number."""
    rows = []
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if cells[0].isdigit():
            assert len(cells) == len(COLUMNS), f"row {cells[0]}: {len(cells)} cells: {line}"
            rows.append((int(cells[0]), cells))
    return rows


def node_id(cell):
    """The first back-quoted span of the test cell."""
    found = re.match(r"`([^`]+)`", cell)
    assert found, f"the test cell must start with a back-quoted node id: {cell!r}"
    return found.group(1)


# ----------------------------------------------------------------------------- pytest's ids
def _escaped(text):
    """pytest's `ascii_escaped` for a str id."""
    return text.encode("unicode_escape").decode("ascii")


class _Module:
    """One test file's syntax tree: its functions, module-level names and string literals."""

    def __init__(self, path):
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.assignments = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assignments[target.id] = node.value
        literals = {
            _escaped(node.value)
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        self.any_literal = "|".join(re.escape(s) for s in sorted(literals, key=len, reverse=True))

    def function(self, path):
        """The function at `Class::name` or `name` (top level or in a class), or `None`."""
        *classes, name = path
        scope = self.tree.body
        for class_name in classes:
            found = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == class_name]
            if not found:
                return None
            scope = found[0].body
        for node in scope:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return node
        return None

    def deref(self, node):
        """The value a module-level name is bound to (the node itself otherwise)."""
        while isinstance(node, ast.Name) and node.id in self.assignments:
            node = self.assignments[node.id]
        return node

    def resolve(self, node):
        """The element nodes of a literal list, `NAME`, `list(NAME)` or `sorted(NAME)`."""
        if isinstance(node, ast.Name) and node.id in self.assignments:
            return self.resolve(self.assignments[node.id])
        if isinstance(node, ast.List | ast.Tuple):
            return list(node.elts)
        if isinstance(node, ast.Dict):
            return list(node.keys)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("list", "sorted", "tuple")
            and len(node.args) == 1
            and not node.keywords
        ):
            return self.resolve(node.args[0])
        return None

    def value_id(self, node, argname, index):
        """The regex of the id pytest forms for one parameter value."""
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                text = _escaped(value) if len(value) <= 100 else f"{argname}{index}"
                return re.escape(text)
            if value is None or isinstance(value, bool | int | float | complex):
                return re.escape(str(value))
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, int | float)
        ):
            return re.escape(str(-node.operand.value))
        if isinstance(node, ast.Lambda):
            return re.escape("<lambda>")
        if isinstance(node, ast.Name | ast.Attribute):
            # A class or a function gives its name; a name bound to data gives argname+index.
            name = node.id if isinstance(node, ast.Name) else node.attr
            if isinstance(node, ast.Name) and node.id in self.assignments:
                return re.escape(f"{argname}{index}")
            return f"(?:{re.escape(name)}|{re.escape(f'{argname}{index}')})"
        return re.escape(f"{argname}{index}")

    def id_pattern(self, node):
        """The regex of an explicit id: a literal, or an f-string whose fields are literals."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return re.escape(_escaped(node.value))
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                if isinstance(part, ast.Constant):
                    parts.append(re.escape(_escaped(part.value)))
                else:
                    parts.append(f"(?:{self.any_literal})")
            return "".join(parts)
        return f"(?:{self.any_literal})"

    def decorator_ids(self, decorator):
        """The regex matching every id one `parametrize` decorator gives."""
        args = list(decorator.args)
        keywords = {k.arg: k.value for k in decorator.keywords}
        names_node = args[0] if args else keywords["argnames"]
        values_node = args[1] if len(args) > 1 else keywords["argvalues"]
        if isinstance(names_node, ast.Constant):
            argnames = [n.strip() for n in names_node.value.split(",") if n.strip()]
        else:
            argnames = [elt.value for elt in names_node.elts]
        if "ids" in keywords:
            ids = self.resolve(keywords["ids"])
            if ids is None:
                return f"(?:{self.any_literal})"
            return "|".join(self.id_pattern(node) for node in ids)
        elements = self.resolve(values_node)
        if elements is None:
            comprehension = self.deref(values_node)
            if isinstance(comprehension, ast.ListComp) and _is_pytest_param(comprehension.elt):
                explicit = {k.arg: k.value for k in comprehension.elt.keywords}.get("id")
                if explicit is not None:
                    return self.id_pattern(explicit)
            return f"(?:{self.any_literal})"
        alternatives = []
        for index, element in enumerate(elements):
            values = [element]
            if _is_pytest_param(element):
                explicit = {k.arg: k.value for k in element.keywords}.get("id")
                if explicit is not None:
                    alternatives.append(self.id_pattern(explicit))
                    continue
                values = list(element.args)
            elif len(argnames) > 1 and isinstance(element, ast.Tuple):
                values = list(element.elts)
            elif len(argnames) > 1:
                alternatives.append(f"(?:{self.any_literal})")
                continue
            alternatives.append(
                "-".join(
                    self.value_id(value, name, index)
                    for value, name in zip(values, argnames, strict=False)
                )
            )
        return "|".join(f"(?:{a})" for a in alternatives)

    def accepts(self, function, param_id):
        decorators = [d for d in function.decorator_list if _is_parametrize(d)]
        if not decorators:
            return False
        # The decorator nearest the function is applied first: its id comes first.
        pattern = "-".join(f"(?:{self.decorator_ids(d)})" for d in reversed(decorators))
        # pytest makes repeated ids unique with a counter suffix.
        return re.fullmatch(f"(?:{pattern})(?:_?[0-9]+)?", param_id) is not None


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_parametrize(decorator):
    return isinstance(decorator, ast.Call) and _dotted(decorator.func).endswith("mark.parametrize")


def _is_pytest_param(node):
    return isinstance(node, ast.Call) and _dotted(node.func) in ("pytest.param", "param")


@cache
def _module(relative):
    return _Module(ROOT / relative)


def check_node_id(nodeid):
    """`None` if `nodeid` names a test pytest would collect, else what is wrong."""
    found = re.fullmatch(r"(tests/[\w/]+\.py)::([\w:]+)(?:\[(.+)\])?", nodeid)
    if not found:
        return "not a node id of the form tests/test_x.py::test_name[param-id]"
    relative, path, param_id = found.groups()
    if not (ROOT / relative).is_file():
        return f"no file {relative}"
    module = _module(relative)
    function = module.function(path.split("::"))
    if function is None:
        return f"no test {path} in {relative}"
    if param_id is None:
        if any(_is_parametrize(d) for d in function.decorator_list):
            return f"{path} is parametrized: name one of its cases"
        return None
    if not module.accepts(function, param_id):
        return f"[{param_id}] is not an id pytest forms for {path}"
    return None


# ----------------------------------------------------------------------------- the catalogue
@pytest.fixture(scope="module")
def rows():
    return catalogue_rows()


def test_at_least_100_kinds(rows):
    assert len(rows) >= 100


def test_rows_are_numbered_consecutively_from_1(rows):
    assert [number for number, _ in rows] == list(range(1, len(rows) + 1))


def test_every_row_fills_every_column(rows):
    for number, cells in rows:
        assert all(cells), f"row {number} has an empty cell"


def test_every_row_names_an_existing_test(rows):
    problems = [
        f"row {number}: {node_id(cells[-1])}: {problem}"
        for number, cells in rows
        if (problem := check_node_id(node_id(cells[-1])))
    ]
    assert problems == []


def test_a_test_cited_twice_says_why(rows):
    first = {}
    for number, cells in rows:
        nodeid = node_id(cells[-1])
        if nodeid not in first:
            first[nodeid] = number
            continue
        shared = SHARED.search(cells[-1])
        assert shared, f"row {number} cites {nodeid} as row {first[nodeid]} does: say why"
        assert int(shared.group(1)) == first[nodeid], f"row {number}: shared with which row?"


# ----------------------------------------------------------------------------- the checker
CHECKER_CASES = {
    # The checker itself, on ids of files it does not depend on the catalogue for.
    "tests/test_bad_input.py::test_xy_entry_points_refuse[nan-x-LinearRegression.fit]": True,
    "tests/test_bad_input.py::test_xy_entry_points_refuse[LinearRegression.fit-nan-x]": False,
    "tests/test_bad_input.py::test_xy_entry_points_refuse[nan-x]": False,
    "tests/test_bad_input.py::test_xy_entry_points_refuse": False,
    "tests/test_bad_input.py::test_check_array_refuses_none": True,
    "tests/test_bad_input.py::test_check_array_refuses_none[x]": False,
    "tests/test_bad_input.py::test_no_such_test": False,
    "tests/test_no_such_file.py::test_x": False,
    "tests/test_streams.py::test_bad_fit_arguments_are_refused_before_training"
    "[kwargs0-batch_size]": True,
    "tests/test_streams.py::test_bad_fit_arguments_are_refused_before_training"
    "[kwargs0-epochs]": False,
    "tests/test_streams.py::test_a_bad_batch_in_a_stream_is_refused_and_never_applied"
    "[generator-y-nan]": True,
    "tests/test_streams.py::test_a_bad_batch_in_a_stream_is_refused_and_never_applied"
    "[y-nan-generator]": False,
    "tests/test_bad_input.py::test_gaussian_mle_entry_points_refuse[constant-fit]": True,
    "tests/test_bad_input.py::test_gaussian_mle_entry_points_refuse[constant-fits]": False,
    "tests/test_files.py::test_csv_dataset_refuses_bad_arguments"
    "[kwargs2-columns \\\\['a'\\\\] are named more than once]": True,
    "tests/test_files.py::test_csv_dataset_refuses_bad_arguments"
    "[kwargs2-columns \\['a'\\] are named more than once]": False,
}


@pytest.mark.parametrize("nodeid", list(CHECKER_CASES))
def test_the_checker_knows_pytests_ids(nodeid):
    assert (check_node_id(nodeid) is None) is CHECKER_CASES[nodeid]

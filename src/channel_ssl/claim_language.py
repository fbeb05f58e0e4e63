"""The language of the claims' tests: parsed, never executed as Python.

A test (``boc > cvit``, ``max(boc - microsnoop) <= 20``, ``rounds_to(mean(hpa_tasks), hpa)``)
may use only numbers, lists of numbers, the claim's cell names, ``+ - * /``, comparisons,
``and``/``or``/``not`` and the functions of :data:`FUNCTIONS`; anything else, or a test that
does not give one true/false, is an error. :func:`explain` writes a test with its values
filled in, for the claims table. Used by :mod:`channel_ssl.claims`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

import numpy as np

# "equal at the printed precision" of rounds_to: one decimal, with float slack
PRINTED_HALF_STEP = 0.05 + 1e-9


def _values(args) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in args])


def _one_arg(name: str, args) -> np.ndarray:
    if len(args) != 1:
        raise ValueError(f"{name}() takes one argument, got {len(args)}")
    return np.asarray(args[0])


FUNCTIONS: dict[str, Callable] = {
    "max": lambda *a: float(np.max(_values(a))),
    "min": lambda *a: float(np.min(_values(a))),
    "sum": lambda *a: float(np.sum(_values(a))),
    "mean": lambda *a: float(np.mean(_values(a))),
    "abs": lambda *a: np.abs(_one_arg("abs", a)),
    "all": lambda *a: bool(np.all(_one_arg("all", a))),
    "any": lambda *a: bool(np.any(_one_arg("any", a))),
    "rounds_to": lambda value, printed: (
        np.abs(np.asarray(value, float) - np.asarray(printed, float)) <= PRINTED_HALF_STEP
    ),
}
_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}
_COMPARE = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}


def _scalar_bool(value, what: str) -> bool:
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype != bool:
        raise ValueError(
            f"{what} gives {array.size} value(s) {array.tolist()}, not one true/false; "
            "wrap comparisons of vectors in all(...) or any(...)"
        )
    return bool(array)


def _evaluate(node: ast.AST, env: Mapping[str, object]):
    """Value of one parsed test node (floats, numpy vectors, booleans)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"constant {node.value!r} is not a number")
        return float(node.value)
    if isinstance(node, ast.List | ast.Tuple):
        return np.array([float(_evaluate(e, env)) for e in node.elts])
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ValueError(f"unknown name {node.id!r}; cells: {sorted(env)}")
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, env)
        if isinstance(node.op, ast.USub):
            return np.negative(value)
        if isinstance(node.op, ast.UAdd):
            return value
        if isinstance(node.op, ast.Not):
            return not _scalar_bool(value, "the operand of 'not'")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, env), _evaluate(node.right, env)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _evaluate(node.left, env)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, env)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result
    if isinstance(node, ast.BoolOp):
        values = [_scalar_bool(_evaluate(v, env), "an operand of and/or") for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ValueError(f"unknown function {name!r}; allowed: {sorted(FUNCTIONS)}")
        if node.keywords:
            raise ValueError(f"{node.func.id}() takes no keyword arguments")
        return FUNCTIONS[node.func.id](*(_evaluate(a, env) for a in node.args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed in a claim test")


def parse_test(text: str) -> ast.Expression:
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"test {text!r} is not an expression: {exc.msg}") from exc


def names_in(tree: ast.AST) -> set[str]:
    """Names the test reads as cells (function names excluded)."""
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def evaluate_test(tree: ast.Expression, env: Mapping[str, object]) -> bool:
    """The claim's verdict on one set of cell values."""
    with np.errstate(all="ignore"):
        return _scalar_bool(_evaluate(tree, env), "the test")


def explain(tree: ast.Expression, env: Mapping[str, object]) -> str:
    """``left op right`` with the sides' values, for a test that is a single comparison."""
    node = tree.body
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return ""
    with np.errstate(all="ignore"):
        left, right = _evaluate(node.left, env), _evaluate(node.comparators[0], env)
    return f"{number_text(left)} {_SYMBOL[type(node.ops[0])]} {number_text(right)}"


def number_text(value) -> str:
    """Numbers as the tables print them: counts whole, scores with 1 to 4 decimals."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return _one_number(float(array))
    return "[" + ", ".join(_one_number(float(v)) for v in array) + "]"


def _one_number(v: float) -> str:
    if v.is_integer() and abs(v) >= 1000:
        return str(int(v))
    text = f"{v:.4f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return "0.0" if text == "-0.0" else text

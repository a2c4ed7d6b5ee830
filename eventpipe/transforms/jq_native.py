"""A native tier for the jaq engine: simple jq programs run as compiled Python.

jaq is fast at evaluating jq, but every call converts its input from Python into
jaq and its outputs back, and it builds small objects slowly: on the backfill
benchmark's ~600-byte orders the projection ``{order_id, customer: .customer.id,
..., items: [.items[] | {sku, qty, price}], notes}`` costs jaq 32 us an event, the
same program as Python closures about 3 us.  Most pipeline programs are of that
kind (projections, paths, comparisons, merges), so :func:`compile_native` turns a
program written in the subset below into Python closures over the Python value
itself; anything else returns None and the program runs on jaq as before.

The subset (jq's grammar and precedence, ``|`` < ``,`` < ``//`` < ``or`` <
``and`` < comparisons < ``+ -``):

* ``.``, paths ``.a``, ``."a b"``, ``.["a"]``, ``.[N]``, ``.[]`` and chains of
  them (``.a.b[0]``, ``.items[]``);
* literals: numbers, strings without interpolation, ``true``, ``false``,
  ``null``; ``[E]`` and ``[]``; ``{k: E, k, "k": E, "k"}`` (values a term or a
  pipe of terms, each with one output);
* ``E | E``, ``E, E``, ``E // E``, ``E and E``, ``E or E``, ``== != < <= > >=``,
  ``+``, ``-``, ``if C then A elif C then A else B end`` (operands with one
  output);
* ``select(E)``, ``first(E)``, ``empty``, ``length``, ``not``, ``type``.

What it never does is decide an edge case on its own.  When a value is outside
what the closures handle exactly (indexing a string, ``length`` of a number,
comparing arrays, adding an object to a list, an integer beyond 2^53, NaN, ...)
they raise :class:`Fallback` and the caller runs the whole program on jaq for
that input, so errors, their messages and every corner of jq's semantics are
jaq's.  ``tests/unit/test_jq_native.py`` checks outputs equal jaq's (and the
error cases fall back) over generated programs and inputs.

Outputs may share unchanged parts of the input (``{customer}`` holds the input's
own ``customer`` object) where jaq returns copies; eventpipe treats event data as
immutable, so nothing can tell.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

Single = Callable[[Any], Any]
"""A program part with exactly one output: value -> output."""
Multi = Callable[[Any], list[Any]]
"""A program part with any number of outputs: value -> a fresh list of outputs."""


class Fallback(Exception):
    """This input needs the real engine (an error or a case the closures leave to it)."""


class Unsupported(Exception):
    """The program is outside the native subset (compile time only)."""


_BIG: Final = 1 << 53  # integers beyond this are left to jaq (its own number rules)


# ------------------------------------------------------------------ tokens
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|//|\.\.|[.|,()\[\]{}:<>+\-])
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset(
    {
        "if", "then", "elif", "else", "end", "as", "def", "reduce", "foreach",
        "try", "catch", "label", "import", "include", "and", "or", "__loc__",
    }
)  # fmt: skip


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise Unsupported(f"character {source[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        text = m.group()
        if kind == "ws":
            if "\\" in text:  # a comment continued by a backslash: leave it to jaq
                raise Unsupported("backslash in a comment")
            continue
        if kind == "op" and text == "..":
            raise Unsupported("recursion")
        out.append((kind, text))
    out.append(("end", ""))
    return out


def _string(text: str) -> str:
    if "\\(" in text:
        raise Unsupported("string interpolation")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Unsupported("string literal") from None
    assert isinstance(value, str)
    return value


def _number(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        n = int(text)
        if n > _BIG:
            raise Unsupported("large integer literal")
        return n
    return float(text)


# ------------------------------------------------------------------ values
def truthy(v: Any) -> bool:
    return v is not None and v is not False


def _field(x: Any, key: str) -> Any:
    if type(x) is dict:
        return x.get(key)
    if x is None:
        return None
    raise Fallback


def _index(x: Any, i: int) -> Any:
    if type(x) is list:
        return x[i] if -len(x) <= i < len(x) else None
    if x is None:
        return None
    raise Fallback


def _iterate(x: Any) -> list[Any]:
    if type(x) is list:
        return list(x)
    if type(x) is dict:
        return list(x.values())
    raise Fallback


def _number_value(x: Any) -> bool:
    """Whether ``x`` is a number the closures compare and add exactly as jaq."""
    t = type(x)
    if t is int:
        if -_BIG <= x <= _BIG:
            return True
        raise Fallback
    if t is float:
        if x != x:  # NaN
            raise Fallback
        return True
    return False


_RANK: Final = {type(None): 0, bool: 1, int: 3, float: 3, str: 4, list: 5, dict: 6}


def _rank(x: Any) -> int:
    r = _RANK.get(type(x))
    if r is None:
        raise Fallback
    if r == 1:
        return 2 if x else 1
    if r == 3:
        _number_value(x)
    return r


def _order(a: Any, b: Any) -> int:
    """jq's total order (null < false < true < numbers < strings < arrays <
    objects) where the closures know it exactly; arrays and objects: Fallback."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra >= 5:
        raise Fallback
    if ra <= 2:
        return 0
    return -1 if a < b else (1 if a > b else 0)


def _equal(a: Any, b: Any) -> bool:
    return _order(a, b) == 0


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": _equal,
    "!=": lambda a, b: not _equal(a, b),
    "<": lambda a, b: _order(a, b) < 0,
    "<=": lambda a, b: _order(a, b) <= 0,
    ">": lambda a, b: _order(a, b) > 0,
    ">=": lambda a, b: _order(a, b) >= 0,
}


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    ta, tb = type(a), type(b)
    if ta is dict and tb is dict:
        return {**a, **b}
    if ta is str and tb is str:
        return a + b
    if ta is list and tb is list:
        return a + b
    if _number_value(a) and _number_value(b):
        return _checked(a + b)
    raise Fallback


def _subtract(a: Any, b: Any) -> Any:
    if _number_value(a) and _number_value(b):
        return _checked(a - b)
    raise Fallback


def _checked(n: Any) -> Any:
    if type(n) is int and not -_BIG <= n <= _BIG:
        raise Fallback
    return n


def _length(x: Any) -> int:
    t = type(x)
    if t is list or t is dict or t is str:
        return len(x)
    if x is None:
        return 0
    raise Fallback  # numbers (absolute value) and booleans (an error): jaq's


_TYPES: Final = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _type(x: Any) -> str:
    name = _TYPES.get(type(x))
    if name is None:
        raise Fallback
    return name


# ------------------------------------------------------------------ nodes
class Node:
    """A compiled program part: ``single`` (one output, ``fn(v) -> value``) or
    not (``fn(v) -> list``)."""

    __slots__ = ("fn", "single")

    def __init__(self, fn: Callable[[Any], Any], single: bool) -> None:
        self.fn = fn
        self.single = single

    def multi(self) -> Multi:
        if not self.single:
            return self.fn
        f = self.fn
        return lambda v: [f(v)]


def _identity(v: Any) -> Any:
    return v


IDENTITY: Final = Node(_identity, True)


def _const(value: Any) -> Node:
    if isinstance(value, list):  # a fresh container each time
        return Node(lambda _v: [], True)
    if isinstance(value, dict):
        return Node(lambda _v: {}, True)
    return Node(lambda _v: value, True)


def _pipe(a: Node, b: Node) -> Node:
    fa, fb = a.fn, b.fn
    if a is IDENTITY:
        return b
    if b is IDENTITY:
        return a
    if a.single and b.single:
        return Node(lambda v: fb(fa(v)), True)
    if a.single:
        return Node(lambda v: fb(fa(v)), False)
    if b.single:
        return Node(lambda v: [fb(x) for x in fa(v)], False)
    return Node(lambda v: [y for x in fa(v) for y in fb(x)], False)


def _path(a: Node, keys: list[str]) -> Node:
    """``a`` followed by ``.k1.k2...`` (one output each)."""
    f = a.fn
    if len(keys) == 1:
        (k,) = keys
        if a is IDENTITY:

            def one(v: Any) -> Any:
                return v.get(k) if type(v) is dict else _field(v, k)

            return Node(one, True)
        if a.single:
            return Node(lambda v: _field(f(v), k), True)

    def chain(x: Any) -> Any:
        for k in keys:
            x = x.get(k) if type(x) is dict else _field(x, k)
        return x

    return _pipe(a, Node(chain, True))


def _comma(a: Node, b: Node) -> Node:
    fa, fb = a.multi(), b.multi()
    return Node(lambda v: fa(v) + fb(v), False)


def _alternative(a: Node, b: Node) -> Node:
    fa, fb = a.multi(), b.multi()

    def alt(v: Any) -> list[Any]:
        kept = [x for x in fa(v) if x is not None and x is not False]
        return kept if kept else fb(v)

    return Node(alt, False)


def _binary(op: str, a: Node, b: Node) -> Node:
    if not (a.single and b.single):
        raise Unsupported(f"{op} over several outputs")
    fa, fb = a.fn, b.fn
    if op == "and":
        return Node(lambda v: truthy(fa(v)) and truthy(fb(v)), True)
    if op == "or":
        return Node(lambda v: truthy(fa(v)) or truthy(fb(v)), True)
    if op == "+":
        return Node(lambda v: _add(fa(v), fb(v)), True)
    if op == "-":
        return Node(lambda v: _subtract(fa(v), fb(v)), True)
    cmp = _COMPARE[op]
    return Node(lambda v: cmp(fa(v), fb(v)), True)


def _object(entries: list[tuple[str, Node]]) -> Node:
    if not all(n.single for _, n in entries):
        raise Unsupported("object values with several outputs")
    pairs = tuple((k, n.fn) for k, n in entries)
    return Node(lambda v: {k: f(v) for k, f in pairs}, True)


def _collect(a: Node | None) -> Node:
    if a is None:
        return Node(lambda _v: [], True)
    f = a.fn
    if a.single:
        return Node(lambda v: [f(v)], True)
    return Node(f, True)  # every multi part returns a fresh list


def _select(a: Node) -> Node:
    if a.single:
        g = a.fn
        return Node(lambda v: [v] if truthy(g(v)) else [], False)
    f = a.fn
    return Node(lambda v: [v for c in f(v) if c is not None and c is not False], False)


def _first(a: Node) -> Node:
    if a.single:
        return a
    f = a.fn

    def first(v: Any) -> list[Any]:
        out = f(v)
        return out[:1]

    return Node(first, False)


def _if(branches: list[tuple[Node, Node]], otherwise: Node) -> Node:
    if not all(c.single and t.single for c, t in branches) or not otherwise.single:
        raise Unsupported("if with several outputs")
    conds = tuple((c.fn, t.fn) for c, t in branches)
    other = otherwise.fn

    def pick(v: Any) -> Any:
        for c, t in conds:
            x = c(v)
            if x is not None and x is not False:
                return t(v)
        return other(v)

    return Node(pick, True)


_FUNCTIONS: Final[dict[str, Node]] = {
    "empty": Node(lambda _v: [], False),
    "length": Node(_length, True),
    "not": Node(lambda v: not truthy(v), True),
    "type": Node(_type, True),
}


# ------------------------------------------------------------------ parser
class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def next(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        kind, t = self.peek()
        if t == text and kind in ("op", "ident"):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise Unsupported(f"expected {text!r}, found {self.peek()[1]!r}")

    def program(self) -> Node:
        node = self.pipe()
        if self.peek()[0] != "end":
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return node

    # precedence, lowest first: | , // or and comparisons + -
    def pipe(self) -> Node:
        left = self.comma()
        if self.accept("|"):
            return _pipe(left, self.pipe())
        return left

    def comma(self) -> Node:
        node = self.alternative()
        while self.accept(","):
            node = _comma(node, self.alternative())
        return node

    def alternative(self) -> Node:
        left = self.or_()
        if self.accept("//"):  # right-associative
            return _alternative(left, self.alternative())
        return left

    def or_(self) -> Node:
        node = self.and_()
        while self.accept("or"):
            node = _binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.compare()
        while self.accept("and"):
            node = _binary("and", node, self.compare())
        return node

    def compare(self) -> Node:
        left = self.additive()
        kind, t = self.peek()
        if kind == "op" and t in _COMPARE:
            self.i += 1
            node = _binary(t, left, self.additive())
            k2, t2 = self.peek()
            if k2 == "op" and t2 in _COMPARE:
                raise Unsupported("chained comparison")  # jq: non-associative
            return node
        return left

    def additive(self) -> Node:
        node = self.postfix()
        while True:
            kind, t = self.peek()
            if kind == "op" and t in ("+", "-"):
                self.i += 1
                node = _binary(t, node, self.postfix())
            elif kind == "op" and t in ("*", "/", "%"):
                raise Unsupported(t)
            else:
                return node

    def postfix(self) -> Node:
        node = self.term()
        return self.suffixes(node)

    def suffixes(self, node: Node) -> Node:
        keys: list[str] = []

        def flush(n: Node) -> Node:
            if keys:
                n = _path(n, list(keys))
                keys.clear()
            return n

        while True:
            kind, t = self.peek()
            if kind == "field":
                self.i += 1
                keys.append(t[1:])
            elif kind == "op" and t == "." and self.toks[self.i + 1][0] == "str":
                self.i += 1
                keys.append(_string(self.next()[1]))
            elif kind == "op" and t == "[":
                node = flush(node)
                node = self.bracket(node)
            elif kind == "op" and t == "." and self.toks[self.i + 1][1] == "[":
                self.i += 1  # ``.a.[0]``: the same as ``.a[0]``
                node = flush(node)
                node = self.bracket(node)
            else:
                return flush(node)

    def bracket(self, node: Node) -> Node:
        self.expect("[")
        if self.accept("]"):
            return _pipe(node, Node(_iterate, False))
        kind, t = self.next()
        negative = False
        if kind == "op" and t == "-":
            negative = True
            kind, t = self.next()
        if kind == "str" and not negative:
            key = _string(t)
            self.expect("]")
            return _path(node, [key])
        if kind == "num" and re.fullmatch(r"\d+", t):
            i = -int(t) if negative else int(t)
            self.expect("]")
            return _pipe(node, Node(lambda v: _index(v, i), True))
        raise Unsupported("index or slice")

    def term(self) -> Node:
        kind, t = self.next()
        if kind == "field":
            self.i -= 1
            return IDENTITY
        if kind == "op" and t == ".":
            nk, nt = self.peek()
            if nk == "str" or nt == "[":
                self.i -= 1  # ``."a"`` / ``.[...]``: suffixes of ``.``
                return self.dot_suffix()
            return IDENTITY
        if kind == "num":
            return _const(_number(t))
        if kind == "op" and t == "-" and self.peek()[0] == "num":
            return _const(-_number(self.next()[1]))
        if kind == "str":
            return _const(_string(t))
        if kind == "op" and t == "(":
            node = self.pipe()
            self.expect(")")
            return node
        if kind == "op" and t == "[":
            if self.accept("]"):
                return _collect(None)
            node = self.pipe()
            self.expect("]")
            return _collect(node)
        if kind == "op" and t == "{":
            return self.object()
        if kind == "ident":
            return self.word(t)
        raise Unsupported(f"term {t!r}")

    def dot_suffix(self) -> Node:
        self.expect(".")
        if self.peek()[0] == "str":
            return _path(IDENTITY, [_string(self.next()[1])])
        return self.bracket(IDENTITY)

    def word(self, name: str) -> Node:
        if name in ("true", "false", "null"):
            return _const({"true": True, "false": False, "null": None}[name])
        if name == "if":
            return self.if_()
        if name in _KEYWORDS:
            raise Unsupported(name)
        if name in ("select", "first") and self.accept("("):
            arg = self.pipe()
            self.expect(")")
            return _select(arg) if name == "select" else _first(arg)
        if self.peek() == ("op", "("):
            raise Unsupported(f"{name}(...)")
        node = _FUNCTIONS.get(name)
        if node is None:
            raise Unsupported(name)
        return node

    def if_(self) -> Node:
        branches = []
        cond = self.pipe()
        self.expect("then")
        branches.append((cond, self.pipe()))
        while self.accept("elif"):
            cond = self.pipe()
            self.expect("then")
            branches.append((cond, self.pipe()))
        self.expect("else")  # jq 1.7's ``if`` without ``else``: left to jaq
        otherwise = self.pipe()
        self.expect("end")
        return _if(branches, otherwise)

    def object(self) -> Node:
        entries: list[tuple[str, Node]] = []
        if self.accept("}"):
            return _const({})
        while True:
            kind, t = self.next()
            if kind == "ident" and t not in _KEYWORDS:
                key = t
            elif kind == "str":
                key = _string(t)
            else:
                raise Unsupported("object key")
            if self.accept(":"):
                entries.append((key, self.object_value()))
            else:
                entries.append((key, _path(IDENTITY, [key])))
            if self.accept("}"):
                return _object(entries)
            self.expect(",")

    def object_value(self) -> Node:
        """jq's ``ExpD``: a term (with suffixes) or terms joined by ``|``."""
        node = self.postfix()
        while self.accept("|"):
            node = _pipe(node, self.postfix())
        return node


_LEAVES: Final = frozenset({str, int, float, bool, type(None), bytes})


def _check_json(x: Any) -> None:
    """Fallback unless ``x`` is made of what jaq hands back unchanged: an input
    that is not a JSON value (a tuple, a datetime, a non-string key) is the
    engine's to convert or refuse.  Iterative: data nested deeper than Python's
    recursion limit is checked like any other."""
    todo = [x]
    pop, push = todo.pop, todo.append
    while todo:
        x = pop()
        t = type(x)
        if t is dict:
            for k, v in x.items():
                if type(k) is not str:
                    raise Fallback
                if type(v) not in _LEAVES:
                    push(v)
        elif t is list:
            for v in x:
                if type(v) not in _LEAVES:
                    push(v)
        elif t not in _LEAVES:
            raise Fallback


class NativeProgram:
    """A program compiled to closures: ``all`` / ``first`` raise :class:`Fallback`
    when the input needs the real engine."""

    __slots__ = ("_fn", "_single")

    def __init__(self, node: Node) -> None:
        self._fn = node.fn
        self._single = node.single

    def all(self, value: Any) -> list[Any]:
        out = [self._fn(value)] if self._single else self._fn(value)
        for x in out:
            if type(x) not in _LEAVES:
                _check_json(x)
        return out

    def first(self, value: Any, missing: Any) -> Any:
        if self._single:
            x = self._fn(value)
        else:
            out = self._fn(value)
            if not out:
                return missing
            x = out[0]
        if type(x) not in _LEAVES:
            _check_json(x)
        return x


def compile_native(source: str) -> NativeProgram | None:
    """The program as closures, or None when it is outside the native subset."""
    try:
        return NativeProgram(_Parser(source).program())
    except (Unsupported, RecursionError):
        return None

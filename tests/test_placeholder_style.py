"""One placeholder style for SQL (issue 23, "SQL they can review"): psycopg's named `%(name)s`, as
the `.sql` files have (service/kit/db/sqlfiles.py), in the Python code of the service and the
workers too. Two styles are refused, each reported as file:line:

- a positional `%s` (or `%b`, `%t`) in a string that is SQL: one passed to a statement call
  (`execute`, `executemany`, `exec_driver_sql`, `copy`, `stream`, `text`, `SQL`), or one with SQL's
  upper-case words in it (SELECT, WHERE, ...);
- a SQLAlchemy bind parameter `:name` in a `text(...)` statement: such SQL goes to the driver with
  `exec_driver_sql(sql, {...})` and `%(name)s` placeholders instead.

The migrations are left alone (they are history, and alembic's DDL `text()` has no parameters). A log
format (`log.info("sent %s", n)`) or another Python `%` format without SQL in it is not SQL."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("service", "workers")
EXCLUDED = ("service/migrations/",)

# psycopg's placeholders and escapes, left to right: `%%`, `%(name)s`, or a positional `%s`.
_PERCENT = re.compile(r"%(%|\([^()]*\)[sbt]|[sbt])")
# SQL's words as the code writes them (upper case); a Python format with one of these in it is SQL.
_SQL_WORD = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|FROM|WHERE|VALUES|SET|RETURNING|JOIN|ORDER BY|GROUP BY"
    r"|LIMIT|ON CONFLICT|ANY|AND|OR|NOT|IS NULL|CASE WHEN|THEN|ELSE|COALESCE|INTERVAL)\b"
)
# A SQLAlchemy bind parameter: a colon before a name, not a cast (`::int`) nor a time (`12:30`).
_BIND = re.compile(r"(?<![:\w\\]):[A-Za-z_]\w*")
# Calls whose first argument is a statement.
_STATEMENT_CALLS = {"execute", "executemany", "exec_driver_sql", "copy", "stream", "text", "SQL"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def positional(sql: str) -> list[int]:
    """The offsets of the positional placeholders in `sql`."""
    return [m.start() for m in _PERCENT.finditer(sql) if m.group(1) in ("s", "b", "t")]


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _text_call(call: ast.Call) -> bool:
    """`text(...)`, `sa.text(...)` or `sqlalchemy.text(...)`: SQLAlchemy's textual statement."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "text"
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "text"
        and isinstance(func.value, ast.Name)
        and func.value.id in ("sa", "sqlalchemy")
    )


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, source: str, tree: ast.Module) -> None:
        self.path = path
        self.source = source
        self.found: list[Violation] = []
        self.statement_args: set[int] = set()
        self.docstrings: set[int] = set()
        self.constants: dict[str, ast.expr] = {}
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    self.docstrings.add(id(body[0].value))
            if isinstance(node, ast.Call) and node.args and _call_name(node) in _STATEMENT_CALLS:
                for part in ast.walk(node.args[0]):
                    self.statement_args.add(id(part))
        for stmt in tree.body:  # module-level names a statement call may be given (TODAY = "...")
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                self.constants[stmt.targets[0].id] = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                self.constants[stmt.target.id] = stmt.value

    def _string(self, node: ast.expr, seen: frozenset[str] = frozenset()) -> str | None:
        """The text of a string expression (literals, f-strings' literal parts, `+`, module names)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(self._string(v) or "" for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._string(node.left, seen), self._string(node.right, seen)
            return None if left is None and right is None else (left or "") + (right or "")
        if isinstance(node, ast.Name) and node.id in self.constants and node.id not in seen:
            return self._string(self.constants[node.id], seen | {node.id})
        return None

    def _report(self, node: ast.expr, what: str, offset: int) -> None:
        segment = ast.get_source_segment(self.source, node) or ""
        line = node.lineno + (segment[:offset].count("\n") if offset >= 0 else 0)
        self.found.append(Violation(self.path, line, what))

    def _check_positional(self, node: ast.expr, value: str) -> None:
        if id(node) in self.docstrings or not positional(value):
            return
        if id(node) in self.statement_args or _SQL_WORD.search(value):
            segment = ast.get_source_segment(self.source, node) or ""
            offset = (positional(segment) or [-1])[0]
            token = value[positional(value)[0] :][:2]
            self._report(node, f"positional {token} placeholder in SQL: use %(name)s", offset)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._check_positional(node, self._string(node) or "")
        # the literal parts are checked as a whole above, the expressions in braces below
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._check_positional(node, node.value)

    def visit_Call(self, node: ast.Call) -> None:
        if _text_call(node) and node.args:
            sql = self._string(node.args[0])
            match = _BIND.search(sql or "")
            if match:
                self._report(
                    node,
                    f"text() with SQLAlchemy bind parameter {match.group()}: "
                    "use exec_driver_sql with %(name)s",
                    (ast.get_source_segment(self.source, node) or "").find(match.group()),
                )
        self.generic_visit(node)


def scan_python(path: str, source: str) -> list[Violation]:
    tree = ast.parse(source, filename=path)
    scanner = _Scanner(path, source, tree)
    scanner.visit(tree)
    return scanner.found


def scan_sql(path: str, source: str) -> list[Violation]:
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        if positional(line):
            found.append(Violation(path, number, "positional placeholder: use %(name)s"))
    return found


def sources() -> list[Path]:
    files = [
        path
        for folder in FOLDERS
        for pattern in ("*.py", "*.sql")
        for path in sorted((ROOT / folder).rglob(pattern))
    ]
    return [p for p in files if not p.relative_to(ROOT).as_posix().startswith(EXCLUDED)]


def scan(path: Path) -> list[Violation]:
    name = path.relative_to(ROOT).as_posix()
    source = path.read_text(encoding="utf-8")
    return scan_sql(name, source) if path.suffix == ".sql" else scan_python(name, source)


def test_sql_uses_named_placeholders_only():
    files = sources()
    assert len(files) > 100 and any(p.suffix == ".sql" for p in files)
    found = [v for path in files for v in scan(path)]
    assert not found, "SQL placeholders other than %(name)s:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    "source",
    [
        'db.execute("SELECT 1 FROM t WHERE id = %s", (1,))',
        'db.execute("DELETE FROM t WHERE id = ANY(%s)", (ids,))',
        'q = ("UPDATE t SET a = 1"\n     " WHERE id = %s")',
        'q = " AND sent_at > %s"',
        'db.execute(f"SELECT {cols} FROM t WHERE id = %s", (1,))',
        'db.execute("lock %s", (1,))',
        'db.execute("SELECT %%s, %s", (1,))',
        'Q = "SELECT 1 WHERE a = %t"',
        'session.execute(text("SELECT 1 FROM t WHERE code = :code"), {"code": c})',
        'session.execute(sa.text("SELECT 1 FROM t WHERE a = :a::int"), {"a": 1})',
        'Q = "SELECT :x"\nsession.execute(text(Q), {"x": 1})',
        'text("SELECT 1 FROM t WHERE code = " + ":code")',
    ],
)
def test_the_scanner_finds_a_violation(source: str):
    assert scan_python("example.py", source)


@pytest.mark.parametrize(
    "source",
    [
        'db.execute("SELECT 1 FROM t WHERE id = %(id)s", {"id": 1})',
        "db.execute(\"SELECT 1 FROM t WHERE note LIKE 'a%%s'\", {})",
        'log.info("sent %s messages to %s", n, who)',
        'raise ValueError("use named placeholders %(name)s, not %s")',
        'def f():\n    """A statement with `%s` placeholders: WHERE id = %s."""',
        'when = now.strftime("%d %b %Y")',
        "text(\"SELECT now()::date, '12:30'::time\")",
        "mapped_column(server_default=text(\"'{}'::jsonb\"))",
        'conn.exec_driver_sql("SELECT 1 FROM t WHERE code = %(code)s", {"code": c})',
    ],
)
def test_the_scanner_passes_named_placeholders_and_formats(source: str):
    assert not scan_python("example.py", source)


def test_the_scanner_names_the_line():
    source = (
        'x = 1\ndb.execute(\n    "SELECT 1 FROM t"\n    " WHERE a = %(a)s AND b = %s",\n    {"a": 1},\n)\n'
    )
    assert [str(v) for v in scan_python("f.py", source)] == [
        "f.py:4: positional %s placeholder in SQL: use %(name)s"
    ]
    assert [v.line for v in scan_sql("f.sql", "SELECT 1\nFROM t\nWHERE a = %s\n")] == [3]

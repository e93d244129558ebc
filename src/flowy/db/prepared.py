"""Hot statements, compiled once and run straight on the DBAPI connection.

A run's life is a handful of small statements (insert it, claim it, number its events,
finish it), each an indexed lookup that SQLite answers in microseconds; SQLAlchemy's
per-execution work around them (compiled-cache lookup, parameter processing through the
execution context, a Result) costs 50-100 µs each, several times the statement itself.
:class:`Prepared` keeps a Core statement's compiled SQL, bind order and type
conversions per dialect, and runs it on the connection of the caller's transaction, so
it commits and rolls back with everything else the transaction wrote.  Values pass
through the columns' own types (JSON, UTC datetimes), so what is stored and read back is
what Core would store and read; the SQL is the dialect's own, so PostgreSQL runs the
same statements.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind names, in the order of the positional paramstyle
    positional: bool
    binds: Mapping[str, Processor]
    # Per bind: its name, the value the statement carries itself, its conversion.
    plan: tuple[tuple[str, Any, Processor], ...]
    results: tuple[Processor, ...]
    row: type[tuple[Any, ...]]  # a named tuple of the selected or returned columns


class Prepared:
    """A Core statement run with plain parameters on a transaction's DBAPI connection.

    ``columns`` lists the keys of an INSERT's values: the statement names exactly
    those, and every execution must pass each (no Python-side column defaults run here).
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] = ()) -> None:
        self.statement = statement
        self.columns = list(columns)
        self._required = frozenset(self.columns)
        self._by_dialect: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        done = self._by_dialect.get(dialect.name)
        if done is not None:
            return done
        kw: dict[str, Any] = {"column_keys": self.columns} if self.columns else {}
        compiled = self.statement.compile(dialect=dialect, **kw)
        assert isinstance(compiled, SQLCompiler)
        binds = {
            name: bp.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bp in compiled.binds.items()
        }
        selected = getattr(self.statement, "exported_columns", ())
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in selected
        )
        row = namedtuple("Row", [c.key or f"c{i}" for i, c in enumerate(selected)])  # type: ignore[misc]
        names = tuple(compiled.positiontup or compiled.binds)
        # Literal values (``status == "queued"``) are binds that carry their value.
        defaults = {
            k: bp.effective_value
            for k, bp in compiled.binds.items()
            if not bp.required and k not in self.columns
        }
        done = _Compiled(
            sql=compiled.string,
            names=names,
            positional=bool(compiled.positional),
            binds=binds,
            plan=tuple((n, defaults.get(n), binds.get(n)) for n in names),
            results=results,
            row=row,
        )
        self._by_dialect[dialect.name] = done
        return done

    def _params(self, c: _Compiled, values: Mapping[str, Any]) -> Any:
        if self.columns and not values.keys() >= self._required:
            missing = [k for k in self.columns if k not in values]
            raise KeyError(f"values for {', '.join(missing)} are missing")
        get = values.get
        out = []
        for name, own, proc in c.plan:
            value = get(name, own)
            out.append(value if proc is None or value is None else proc(value))
        return tuple(out) if c.positional else dict(zip(c.names, out, strict=True))

    def _run(self, dbapi: Any, dialect: Dialect, values: Mapping[str, Any]) -> Result:
        c = self._compile(dialect)
        cursor = dbapi.cursor()
        try:
            cursor.execute(c.sql, self._params(c, values))
            rows = cursor.fetchall() if cursor.description is not None else []
            return Result(c, rows, cursor.rowcount)
        finally:
            cursor.close()

    def execute(self, bind: Session | Connection | Engine, values: Mapping[str, Any]) -> Result:
        """Run the statement with ``values`` in ``bind``'s transaction; on an Engine, on a
        pooled connection of its own and no transaction (one SELECT reads one consistent
        snapshot by itself: what the poll and other single reads need)."""
        if isinstance(bind, Engine):
            dbapi = bind.raw_connection()
            try:
                return self._run(dbapi, bind.dialect, values)
            finally:
                dbapi.close()  # back to the pool, which rolls back whatever the driver began
        return self._run(*_driver(bind), values)

    def execute_many(self, bind: Session | Connection, values: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per item of ``values`` (one DBAPI ``executemany``)."""
        dbapi, dialect = _driver(bind)
        c = self._compile(dialect)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(c.sql, [self._params(c, v) for v in values])
        finally:
            cursor.close()


#: Session.info key of the transaction's DBAPI connection (see _driver).
_DRIVER = "flowy_prepared_driver"


def _driver(bind: Session | Connection) -> tuple[Any, Dialect]:
    """The DBAPI connection of ``bind``'s transaction, and its dialect.  A session keeps
    it for the rest of its transaction: asking the Session for its connection costs
    more than most statements here."""
    if isinstance(bind, Connection):
        return bind.connection.driver_connection, bind.dialect
    tx = bind.get_transaction()
    known = bind.info.get(_DRIVER)
    if known is not None and tx is not None and known[0] is tx:
        return known[1], known[2]
    conn = bind.connection()
    dbapi = conn.connection.driver_connection
    bind.info[_DRIVER] = (bind.get_transaction(), dbapi, conn.dialect)
    return dbapi, conn.dialect


class Result:
    """The rows a prepared statement answered, as named tuples of the columns' values
    converted by their types (``row.id``, ``row._asdict()``)."""

    def __init__(self, compiled: _Compiled, rows: list[Any], rowcount: int) -> None:
        self._c = compiled
        self._rows = rows
        self.rowcount = rowcount

    def _row(self, raw: Sequence[Any]) -> Any:
        convert = self._c.results
        return self._c.row(
            *(v if f is None or v is None else f(v) for f, v in zip(convert, raw, strict=True))
        )

    def first(self) -> Any:
        """The first row, or None."""
        return self._row(self._rows[0]) if self._rows else None

    def all(self) -> list[Any]:
        return [self._row(r) for r in self._rows]

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        row = self.first()
        return row[0] if row is not None else None

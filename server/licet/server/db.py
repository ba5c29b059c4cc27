"""Database engines and transactions.

SQLite allows one writer at a time, and a transaction that reads before it writes fails with
SQLITE_BUSY when another took the write lock in between. So on SQLite every write transaction starts
with `BEGIN IMMEDIATE` on a single writer connection, and reads use a separate pool. On PostgreSQL
one pool serves both and writers serialise per tenant on the row lock of the tenant's log head.

Writes through `run_write` (decisions, approvals) are committed in groups: on SQLite by one thread
that runs the units of work waiting when it becomes free in one transaction, on PostgreSQL by one
transaction at a time per group key (a decision's credential) in each process, the units of that key
that arrive meanwhile going into the next. A burst of decisions then pays for one thread hop, BEGIN,
lock and COMMIT instead of one each, and on PostgreSQL waits in order in the process instead of in a
queue of connections on the tenant's row lock. A unit that raises rolls its group back, and the
group runs again with each unit in a savepoint (which costs too much to pay always): the failing one is
rolled back to it and fails alone, so every unit commits or fails as if it had run alone. What a unit
asks to do after the commit (`after_commit`) happens only if the group commits and the unit did not
fail. What a transaction reads once or keeps to write together (`transaction_state`: the log rows and
session events of a group's decisions, written with one statement per table) lives as long as the
transaction, and is written before it commits (before each unit's savepoint ends when isolated).

A failure while committing is reported as `OutcomeUnknown`: the COMMIT may have reached the database
before its acknowledgement was lost, so nobody may be told that nothing was recorded. The API tells the
caller to retry with the same Idempotency-Key, which returns what was recorded (server/errors.py).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
_LOOKUP_THREADS = 4
_BEGIN_WRITE = "BEGIN IMMEDIATE"
MAX_GROUP = 32  # units of work committed together at most (bounds how long the write lock is held)


class OutcomeUnknown(Exception):
    """A write transaction failed while committing: it may have committed or not."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"the database failed while committing, so the transaction may have committed: {error!r}")
        self.error = error


@dataclass
class RequestWrites:
    """How many units of work (`Database.run_write`: decisions, approval votes) one API request has
    committed so far; an error after one must not be answered as if nothing was recorded."""

    committed: int = 0


_REQUEST_WRITES: ContextVar[RequestWrites | None] = ContextVar("licet_request_writes", default=None)


@contextmanager
def counting_request_writes() -> Iterator[RequestWrites]:
    """Count the units of work committed inside the block (one API request)."""
    writes = RequestWrites()
    token = _REQUEST_WRITES.set(writes)
    try:
        yield writes
    finally:
        _REQUEST_WRITES.reset(token)


def _commit_was_sent(error: Exception) -> bool:
    # SQLAlchemy refuses some COMMITs before sending them (InvalidRequestError: e.g. the connection was
    # lost earlier in the transaction): then nothing was committed. Any other failure may have come
    # after the database committed.
    return not isinstance(error, InvalidRequestError)


def _sqlite_engine(url: str, *, writer: bool, synchronous: str) -> AsyncEngine:
    # Readers: a fixed pool (no overflow), as each aiosqlite connection is a thread of its own and
    # opening one per burst of requests costs more than waiting for a free one.
    engine = create_async_engine(url, pool_size=1 if writer else 8, max_overflow=0,
                                 connect_args={"timeout": 30})
    _sqlite_setup(engine.sync_engine, begin=_BEGIN_WRITE if writer else "BEGIN", synchronous=synchronous)
    return engine


def _plain_sqlite_engine(url: str, *, pool_size: int, begin: str | None, synchronous: str,
                         **options: Any) -> Engine:
    """An engine on the plain sqlite3 driver, for connections used from threads of our own."""
    engine = create_engine(url.replace("+aiosqlite", ""), pool_size=pool_size, max_overflow=0,
                           connect_args={"timeout": 30, "check_same_thread": False}, **options)
    _sqlite_setup(engine, begin=begin, synchronous=synchronous)
    return engine


def _sqlite_setup(engine: Engine, *, begin: str | None, synchronous: str) -> None:
    # `begin`: the statement that opens each transaction; None for autocommit connections, whose
    # single-statement lookups are each consistent on their own.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    if begin is not None:
        event.listen(engine, "begin", lambda connection: connection.exec_driver_sql(begin))


@dataclass
class _Unit:
    """A unit of work for a group writer and where its outcome goes."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = (False, None)  # (succeeded, result or exception)


_AFTER_COMMIT = "licet.after_commit"


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the write transaction of `session` has committed; never if it does not
    (nor if the unit of work that asked fails on its own)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _committed(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()


@runtime_checkable
class DeferredWrites(Protocol):
    """Rows a write transaction keeps in memory and writes together just before it commits."""

    def write(self, connection: Connection) -> None:
        """Write what was kept (and forget it)."""


_STATE = "licet.transaction_state"
S = TypeVar("S")


def transaction_state(session: Session, kind: Callable[[], S]) -> S:
    """The write transaction's object of this `kind` (made on first use): what it read once and may
    reuse, or rows it keeps (`DeferredWrites`) to write just before it commits, or before the savepoint
    of a unit ends when a group's units are isolated (see the module's docstring). It is dropped with
    a unit that fails and when the transaction ends."""
    kept = session.info.setdefault(_STATE, {})
    found = kept.get(kind)
    if found is None:
        found = kept[kind] = kind()
    return cast(S, found)


def _write_deferred(session: Session) -> None:
    for state in session.info.get(_STATE, {}).values():
        if isinstance(state, DeferredWrites):
            state.write(session.connection())


class _UnitFailed(Exception):
    """A unit of a group raised (not the transaction around it)."""

    def __init__(self, unit: _Unit, error: Exception) -> None:
        super().__init__(repr(error))
        self.unit, self.error = unit, error


def _run_units(session: Session, group: list[_Unit], rolled_back: Callable[[], None], isolated: bool) -> None:
    """Run each unit of `group` in the open transaction of `session`, setting its outcome.
    Not `isolated`: a unit that raises ends the run (`_UnitFailed`) and so rolls the transaction back.
    `isolated`: each unit runs in a savepoint; one that raises is rolled back to it, with what it asked
    to run after the commit, and only it fails."""
    if not isolated:
        for unit in group:
            try:
                unit.outcome = (True, unit.fn(session, *unit.args))
            except Exception as exc:
                raise _UnitFailed(unit, exc) from exc
        try:
            _write_deferred(session)
        except Exception as exc:  # whose rows failed is not known here: isolated, each unit writes its own
            raise _UnitFailed(group[-1], exc) from exc
        return
    for unit in group:
        waiting = session.info.setdefault(_AFTER_COMMIT, [])
        kept = len(waiting)
        try:
            with session.begin_nested():
                unit.outcome = (True, unit.fn(session, *unit.args))
                _write_deferred(session)
        except Exception as exc:  # its own outcome, which the awaiting request raises
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise  # the connection is lost, and the transaction with it: no savepoint contains that
            del waiting[kept:]
            session.info.pop(_STATE, None)  # what it read and kept may describe writes now undone
            unit.outcome = (False, exc)
            rolled_back()  # what the process cached may describe the writes just undone


def _failed(group: list[_Unit], exc: BaseException) -> None:
    for unit in group:
        unit.outcome = (False, exc)


def _commit_group(session: Session, group: list[_Unit], telling_rollbacks: Callable[[], Any],
                  rolled_back: Callable[[], None]) -> None:
    """Run `group` in one transaction of `session`; if a unit raises, run it again with each unit in
    a savepoint (which costs, so only then). A failure to begin or commit is every unit's outcome."""
    try:
        try:
            _transaction(session, group, telling_rollbacks, rolled_back, isolated=False)
        except _UnitFailed as failed:
            if len(group) == 1:
                failed.unit.outcome = (False, failed.error)
            else:
                _transaction(session, group, telling_rollbacks, rolled_back, isolated=True)
    except Exception as exc:  # noqa: BLE001 - handed to the awaiting requests, never swallowed
        _failed(group, exc)


def _transaction(session: Session, group: list[_Unit], telling_rollbacks: Callable[[], Any],
                 rolled_back: Callable[[], None], *, isolated: bool) -> None:
    # Closing the session afterwards forgets every object it loaded, so none outlives its transaction,
    # and the session can serve the next one.
    committing = False
    try:
        with telling_rollbacks(), session.begin():
            _run_units(session, group, rolled_back, isolated)
            session.flush()
            committing = True  # what fails from here on is the COMMIT itself, as the block ends
        _committed(session)
    except Exception as exc:
        if committing and _commit_was_sent(exc):
            raise OutcomeUnknown(exc) from exc
        raise
    finally:
        session.info.pop(_AFTER_COMMIT, None)  # what a rolled-back transaction asked for goes with it
        session.info.pop(_STATE, None)
        session.close()


class _GroupWriter:
    """One thread that runs units of work on the SQLite writer connection, committing the units that
    queued up meanwhile together (see the module's docstring)."""

    def __init__(self, sessions: sessionmaker[Session], telling_rollbacks: Callable[[], Any],
                 rolled_back: Callable[[], None]) -> None:
        self._session, self._telling_rollbacks, self._rolled_back = sessions(), telling_rollbacks, rolled_back
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="licet-sqlite-writer", daemon=True)
        self._thread.start()

    async def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """`fn(session, *args)`, committed (with others) unless it raises."""
        if self._stopped:
            raise RuntimeError("the database was disposed of: no more writes")
        loop = asyncio.get_running_loop()
        unit = _Unit(fn, args, loop, loop.create_future())
        self._queue.put(unit)
        result: T = await unit.future
        return result

    def stop(self) -> None:
        """Finish the queued units, then end the thread."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(unit)
            # One session for the thread's life: building one per group cost more.
            _commit_group(self._session, group, self._telling_rollbacks, self._rolled_back)
            _settle(group)


class _KeyedGroups:
    """PostgreSQL: one write transaction at a time per group key in this process; the units of that
    key that arrive meanwhile are committed together in the next (see the module's docstring). Keys
    are per event loop: units of different loops never share a transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], telling_rollbacks: Callable[[], Any],
                 rolled_back: Callable[[], None]) -> None:
        self._sessions, self._telling_rollbacks, self._rolled_back = sessions, telling_rollbacks, rolled_back
        self._waiting: dict[tuple[asyncio.AbstractEventLoop, str], list[_Unit]] = {}
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """`fn(session, *args)`, committed (with others of `key`) unless it raises."""
        loop = asyncio.get_running_loop()
        unit = _Unit(fn, args, loop, loop.create_future())
        waiting = self._waiting.get((loop, key))
        if waiting is not None:
            waiting.append(unit)
        else:
            self._waiting[(loop, key)] = [unit]
            # A task of its own: a request that goes away must not take the others' group with it.
            drainer = loop.create_task(self._drain((loop, key)))
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        result: T = await unit.future
        return result

    async def _drain(self, key: tuple[asyncio.AbstractEventLoop, str]) -> None:
        waiting = self._waiting[key]
        group: list[_Unit] = []
        try:
            while waiting:
                group = waiting[:MAX_GROUP]
                del waiting[:len(group)]
                async with self._sessions() as session:
                    await session.run_sync(_commit_group, group, self._telling_rollbacks, self._rolled_back)
                _resolve(group)
                group = []
        except BaseException as exc:  # cancelled at shutdown: nobody may wait for ever
            _failed(group + waiting, OutcomeUnknown(exc))  # abandoned before or during its COMMIT
            _resolve(group + waiting)
            raise
        finally:
            del self._waiting[key]



def _settle(group: list[_Unit]) -> None:
    # From the writer thread: one wake-up of each event loop per group, not one per unit.
    by_loop: dict[asyncio.AbstractEventLoop, list[_Unit]] = {}
    for unit in group:
        by_loop.setdefault(unit.loop, []).append(unit)
    for loop, units in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, units)
        except RuntimeError:  # that loop is closed: nobody waits for these outcomes any more
            continue


def _resolve(units: list[_Unit]) -> None:
    for unit in units:
        if unit.future.done():  # its request went away (cancelled)
            continue
        succeeded, value = unit.outcome
        if succeeded:
            unit.future.set_result(value)
        else:
            unit.future.set_exception(value)


class Database:
    """The engines of one database and its transactions."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # Writes through `write()` (checkpoint signing, policies, people, keys) are few and always
            # synced: a signed checkpoint's COMMIT also syncs every decision committed before it (one WAL
            # file), so no head is signed that a power cut could take back (logstore.save_checkpoint).
            self.writer = _sqlite_engine(url, writer=True, synchronous="FULL")
            self.reader = _sqlite_engine(url, writer=False, synchronous=sqlite_synchronous)
        else:
            self.writer = self.reader = create_async_engine(url, pool_size=20, max_overflow=20,
                                                            pool_pre_ping=True)
        self._write = async_sessionmaker(self.writer, expire_on_commit=False)
        self._read = async_sessionmaker(self.reader, expire_on_commit=False)
        self._rollback_listeners: list[Callable[[], None]] = []
        self._writer: _GroupWriter | None = None
        self._groups = _KeyedGroups(self._write, self._telling_rollbacks, self._rolled_back)
        self._lookups: ThreadPoolExecutor | None = None
        self._plain_engines: list[Engine] = []
        if self.is_sqlite:
            # The hot paths (a decision's transaction, the credential lookup of every request) run on
            # threads of their own with the plain sqlite3 driver: one thread hop each instead of one
            # per statement through aiosqlite.
            writer = _plain_sqlite_engine(url, pool_size=1, begin=_BEGIN_WRITE, synchronous=sqlite_synchronous)
            self._writer = _GroupWriter(sessionmaker(writer, expire_on_commit=False), self._telling_rollbacks,
                                        self._rolled_back)
            self._sync_reader = _plain_sqlite_engine(url, pool_size=_LOOKUP_THREADS, begin=None,
                                                     synchronous=sqlite_synchronous,
                                                     pool_reset_on_return=None, isolation_level="AUTOCOMMIT")
            self._lookups = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="licet-sqlite-reader")
            self._lookup_connection = threading.local()
            self._lookup_connections: list[Connection] = []
            self._plain_engines = [writer, self._sync_reader]

    def on_rollback(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a write transaction does not commit (to drop what it cached)."""
        self._rollback_listeners.append(listener)

    async def run_write(self, fn: Callable[..., T], *args: Any, group: str | None = None) -> T:
        """Run `fn(session, *args)` in a write transaction: committed unless it raises, and then
        nothing it wrote stays. The transaction may hold other units too (see above): on SQLite any,
        on PostgreSQL those of the same `group` (none without one)."""
        if self._writer is not None:
            result = await self._writer.submit(fn, args)
        elif group is not None:
            result = await self._groups.submit(group, fn, args)
        else:
            async with self.write() as session:
                result = await session.run_sync(fn, *args)
        writes = _REQUEST_WRITES.get()
        if writes is not None:
            writes.committed += 1
        return result

    @contextmanager
    def _telling_rollbacks(self) -> Iterator[None]:
        # Around a write transaction: whatever ends it other than a commit reaches the listeners.
        try:
            yield
        except BaseException:
            self._rolled_back()
            raise

    def _rolled_back(self) -> None:
        for listener in self._rollback_listeners:
            listener()

    async def first(self, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
        """The first row `statement` reads (a credential lookup), outside any transaction of the caller's."""
        if self._lookups is not None:
            return await asyncio.get_running_loop().run_in_executor(self._lookups, self._first, statement, params)
        async with self.reader.connect() as connection:
            return (await connection.execute(statement, params)).first()

    def _first(self, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
        # Each lookup thread keeps its autocommit connection: a pool checkout per lookup cost more
        # than the lookup itself.
        connection: Connection | None = getattr(self._lookup_connection, "value", None)
        if connection is None:
            connection = self._lookup_connection.value = self._sync_reader.connect()
            self._lookup_connections.append(connection)
        return connection.execute(statement, params).first()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._telling_rollbacks():
            async with self._write() as session:
                committing = False
                try:
                    async with session.begin():
                        yield session
                        await session.run_sync(_write_deferred)
                        await session.flush()
                        committing = True  # what fails from here on is the COMMIT itself, as the block ends
                except Exception as exc:
                    if committing and _commit_was_sent(exc):
                        raise OutcomeUnknown(exc) from exc
                    raise
                finally:
                    session.info.pop(_STATE, None)
                _committed(session.sync_session)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read transaction, rolled back when the session closes."""
        async with self._read() as session:
            yield session

    async def dispose(self) -> None:
        """Close every connection."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)  # the queued units finish first
        if self._lookups is not None:
            self._lookups.shutdown()
            for connection in self._lookup_connections:
                connection.close()
        for engine in self._plain_engines:
            engine.dispose()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

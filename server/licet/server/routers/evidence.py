"""Certificates and the evidence log: checkpoints, inclusion and consistency proofs, entries.

Checkpoints are signed per batch, on demand: when someone asks for the newest checkpoint or for a
proof of an entry the newest kept checkpoint does not cover yet, one is signed at the current size.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from licet.kernel.bundle import BundleError, make_bundle
from licet.kernel.checkpoint import parse_checkpoint
from licet.kernel.log import LogError, TransparencyLog
from licet.kernel.note import NoteVerifier
from licet.server import listings, responses
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, require
from licet.server.listings import glob_to_like, utc_bound
from licet.server.logstore import DatabaseLogStore, locked_store
from licet.server.models import CertificateRecord, CertificateRule, LogCheckpoint
from licet.server.routers import INT64_MAX, QueryDateTime, Text
from licet.server.routers.decide import services_of
from licet.server.services import Services
from licet.server.time import utcnow

router = APIRouter(prefix="/v1", tags=["evidence"])
_log = structlog.get_logger("licet.evidence")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _checkpoint_json(note: str) -> dict[str, Any]:
    parsed = parse_checkpoint(note)
    return {"origin": parsed.origin, "size": parsed.size, "root_hash": _b64(parsed.root_hash), "note": note}


def _fresh_checkpoint(session: Session, services: Services, tenant: str, covering: int) -> str:
    """The newest kept checkpoint if it covers `covering` entries, else one signed now."""
    store = DatabaseLogStore(session.connection(), tenant)
    kept = store.latest_checkpoint()
    if kept is not None and kept[0] >= covering:
        return kept[1]
    log = TransparencyLog(locked_store(session, tenant), services.origin(tenant))
    services.signed_heads.check(tenant, log)  # never sign a head contradicting one signed before
    return log.sign_checkpoint(services.note_signer(tenant))


async def checkpoint_covering(services: Services, tenant: str, covering: int) -> str:
    """A signed checkpoint of at least `covering` entries, signing one if needed."""
    async with services.db.read() as session:
        kept = await session.run_sync(lambda s: DatabaseLogStore(s.connection(), tenant).latest_checkpoint())
    if kept is not None and kept[0] >= covering:
        return kept[1]
    async with services.db.write() as session:  # its COMMIT is durable (DatabaseLogStore.save_checkpoint)
        note: str = await session.run_sync(_fresh_checkpoint, services, tenant, covering)
    await asyncio.to_thread(services.signed_heads.record, {tenant: note})  # on disk before anyone sees it
    return note


async def _certificate(services: Services, caller: Caller, certificate_id: str) -> CertificateRecord:
    async with services.db.read() as session:
        found = (await session.execute(select(CertificateRecord).where(
            CertificateRecord.tenant_id == caller.tenant_id, CertificateRecord.id == certificate_id))).scalar()
    # Agents see their own certificates only; anything else is "not found", never "forbidden".
    if found is None or (caller.role == "agent" and found.principal_id != caller.principal_id):
        raise not_found("certificate")
    return found


Outcome = Literal["permit", "forbid", "require_approval", "deny"]


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions a listing or an export covers (all filters together)."""

    principal: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    rule: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self, caller: Caller, *, walk_log: bool = False) -> Select[*tuple[Any, ...]]:
        """The matching decisions visible to `caller` (agents: their own), newest first. With
        `walk_log` (SQLite), the time bounds are kept off the time index, so the database walks the
        log index from the newest and stops at the page's end (see `walks_log`); the rows are the same."""
        return self._where(select(*_LISTED), caller, walk_log).order_by(CertificateRecord.log_index.desc())

    def page(self, caller: Caller, *, before: int | None, limit: int, walk_log: bool = False,
             ) -> Select[*tuple[Any, ...]]:
        """Up to `limit` rows of `query` older than log index `before`. The page's log indexes are chosen
        first, from the indexes where the filter allows: a time range over half of 10^5 decisions then
        sorts 5·10^4 integers, not 5·10^4 certificate bodies (0.7 s → under 0.1 s)."""
        keys = self._where(select(CertificateRecord.log_index), caller, walk_log)
        if before is not None:
            keys = keys.where(CertificateRecord.log_index < before)
        keys = keys.order_by(CertificateRecord.log_index.desc()).limit(limit)
        return select(*_LISTED).where(CertificateRecord.tenant_id == caller.tenant_id,
                                      CertificateRecord.log_index.in_(keys)).order_by(CertificateRecord.log_index.desc())

    def _where(self, query: Select[*tuple[Any, ...]], caller: Caller, walk_log: bool) -> Select[*tuple[Any, ...]]:
        query = query.where(CertificateRecord.tenant_id == caller.tenant_id)
        if caller.role == "agent":
            query = query.where(CertificateRecord.principal_id == caller.principal_id)
        if self.principal:
            query = query.where(CertificateRecord.principal_id == self.principal)
        if self.action:
            query = query.where(CertificateRecord.action.like(glob_to_like(self.action), escape="\\"))
        if self.outcome:
            query = query.where(CertificateRecord.outcome == self.outcome)
        if self.rule:
            query = query.where(select(CertificateRule.log_index).where(
                CertificateRule.tenant_id == CertificateRecord.tenant_id, CertificateRule.rule == self.rule,
                CertificateRule.log_index == CertificateRecord.log_index).exists())
        issued_at = _UNINDEXED_TIME if walk_log else CertificateRecord.issued_at
        if self.since:
            query = query.where(issued_at >= self.since)
        if self.until:
            query = query.where(issued_at < self.until)
        return query

    async def walks_log(self, session: AsyncSession, caller: Caller) -> bool:
        """Whether `query(walk_log=True)` is the faster plan: on SQLite, for a time range holding many
        decisions with few newer than it. SQLite has no statistics on the time index and always
        scans the range there, then sorts it by log index: 1.3 s for a range of 10^5 rows, where
        walking the log index finds a page at once. Two counts on the time index alone (capped, so
        at most a few thousand index entries) tell the two cases apart."""
        if (self.since is None and self.until is None) or (await session.connection()).dialect.name != "sqlite":
            return False
        scope = [CertificateRecord.tenant_id == caller.tenant_id]
        within = [*scope, *([CertificateRecord.issued_at >= self.since] if self.since else []),
                  *([CertificateRecord.issued_at < self.until] if self.until else [])]
        if await _count_upto(session, within, _WIDE) <= _WIDE:
            return False  # few rows in range: the time index finds them all and sorts them quickly
        return self.until is None or await _count_upto(
            session, [*scope, CertificateRecord.issued_at >= self.until], _NEWER) <= _NEWER


_WIDE = 2000  # more rows than this in range: sorting them costs more than walking to a page's end
_NEWER = 5000  # more rows than this after the range: the walk would pass them all first
# `+issued_at`: SQLite uses no index for a column under unary plus (its documented planner hint).
_UNINDEXED_TIME = UnaryExpression(CertificateRecord.__table__.c.issued_at, operator=operators.custom_op("+"),
                                  type_=CertificateRecord.issued_at.type)


async def _count_upto(session: AsyncSession, where: list[Any], cap: int) -> int:
    """How many certificates match `where`, counting no further than `cap` + 1."""
    found = select(literal(1)).select_from(CertificateRecord).where(*where).limit(cap + 1).subquery()
    return int((await session.execute(select(func.count()).select_from(found))).scalar_one())


_LISTED = (CertificateRecord.id, CertificateRecord.log_index, CertificateRecord.principal_id, CertificateRecord.action,
           CertificateRecord.outcome, CertificateRecord.issued_at, CertificateRecord.body)
EXPORT_COLUMNS = ("log_index", "id", "issued_at", "principal_id", "action", "decision", "rules", "request_hash")


def decision_filter(
        principal: Annotated[str | None, Query(max_length=200, description="The agent (principal id)")] = None,
        action: Annotated[str | None, Query(max_length=200, description="An action or a glob: `payments.*`")] = None,
        outcome: Annotated[Outcome | None, Query()] = None,
        rule: Annotated[str | None, Query(max_length=200, description="A rule the certificate names")] = None,
        since: Annotated[QueryDateTime | None, Query(description="Issued at or after (RFC 3339)")] = None,
        until: Annotated[QueryDateTime | None, Query(description="Issued before (RFC 3339)")] = None) -> DecisionFilter:
    """The decision filter of a request's query string."""
    return DecisionFilter(principal, action, outcome, rule, utc_bound(since), utc_bound(until))


def listed(row: Any) -> dict[str, Any]:
    """A decision as listings and exports show it."""
    certificate = json.loads(row.body)
    return {"id": row.id, "log_index": row.log_index, "principal_id": row.principal_id, "action": row.action,
            "decision": row.outcome, "rules": certificate.get("rules", []),
            "resource": certificate.get("request", {}).get("resource"),
            "request_hash": certificate.get("request_hash"), "issued_at": row.issued_at.isoformat()}


@router.get("/certificates", summary="Certificates, newest first", response_model=responses.CertificatePage)
async def list_certificates(request: Request, caller: Annotated[Caller, require("certificates.read")],
                            matching: Annotated[DecisionFilter, Depends(decision_filter)],
                            before: Annotated[int | None, Query(ge=0, le=INT64_MAX,
                                                                 description="Log index to page before")] = None,
                            limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """A page of decisions (agents: their own), filtered; page on with `before` = `next_before`."""
    async with services_of(request).db.read() as session:
        walk = await matching.walks_log(session, caller)
        rows = (await session.execute(matching.page(caller, before=before, limit=limit, walk_log=walk))).all()
    items = [listed(r) for r in rows]
    return {"certificates": items, "next_before": items[-1]["log_index"] if len(items) == limit else None}


@router.get("/certificates/export", summary="Every matching decision, streamed as CSV or JSON lines",
            response_class=StreamingResponse,
            responses={200: {"content": listings.EXPORT_CONTENT,
                             "description": "One decision per line, newest first"}})
async def export_certificates(request: Request, caller: Annotated[Caller, require("certificates.read")],
                              matching: Annotated[DecisionFilter, Depends(decision_filter)],
                              format: Annotated[listings.Format, Query()] = "jsonl") -> StreamingResponse:
    """The filtered set, newest first: CSV with the listing's columns, or JSON lines of the listing's
    fields plus the signed certificate (for a SIEM)."""
    services = services_of(request)

    async def fetch(before: int | None) -> Sequence[Any]:
        query = matching.query(caller)
        if before is not None:
            query = query.where(CertificateRecord.log_index < before)
        async with services.db.read() as session:
            return (await session.execute(query.limit(listings.PAGE))).all()

    def render(row: Any) -> dict[str, Any]:
        return listed(row) if format == "csv" else {**listed(row), "certificate": json.loads(row.body)}

    return listings.export(fetch, lambda row: row.log_index, render, EXPORT_COLUMNS, format, "licet-decisions")


_WINDOWS = {"hour": (timedelta(hours=1), "minute"), "day": (timedelta(days=1), "hour"),
            "week": (timedelta(days=7), "day")}
# A bucket's label is a prefix of the stored time text (SQLite) or the same format (PostgreSQL).
_BUCKET_TEXT = {"minute": (16, "YYYY-MM-DD HH24:MI"), "hour": (13, "YYYY-MM-DD HH24"), "day": (10, "YYYY-MM-DD")}
REFUSED = ("forbid", "deny")


def _bucket(dialect: str, unit: str) -> Any:
    length, pattern = _BUCKET_TEXT[unit]
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", CertificateRecord.issued_at), pattern)
    return func.substr(CertificateRecord.issued_at, 1, length)


@router.get("/certificates/summary", summary="Decisions per outcome over time, and the most refused",
            response_model=responses.DecisionSummary)
async def summary(request: Request, caller: Annotated[Caller, require("certificates.read")],
                  window: Annotated[Literal["hour", "day", "week"], Query()] = "day") -> dict[str, Any]:
    """Counts per outcome in each minute (last hour), hour (last day) or day (last week), and the
    actions and agents refused most often in the window (agents: their own decisions)."""
    span, unit = _WINDOWS[window]
    since = utcnow() - span
    scope = [CertificateRecord.tenant_id == caller.tenant_id, CertificateRecord.issued_at >= since]
    if caller.role == "agent":
        scope.append(CertificateRecord.principal_id == caller.principal_id)
    services = services_of(request)
    async with services.db.read() as session:
        bucket = _bucket((await session.connection()).dialect.name, unit).label("bucket")
        rows = (await session.execute(select(bucket, CertificateRecord.outcome, func.count()).where(*scope).group_by(
            bucket, CertificateRecord.outcome).order_by(bucket))).all()
        refused = [*scope, CertificateRecord.outcome.in_(REFUSED)]
        top = {}
        for name, column in (("actions", CertificateRecord.action), ("agents", CertificateRecord.principal_id)):
            counted = func.count().label("n")
            top[name] = [{"name": r[0], "count": r[1]} for r in (await session.execute(
                select(column, counted).where(*refused).group_by(column).order_by(counted.desc(), column).limit(5)
            )).all()]
    series: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(("permit", "forbid", "deny", "require_approval"), 0)
    for at, outcome, count in rows:
        point = series.setdefault(at, {"at": at, **dict.fromkeys(totals, 0)})
        point[outcome] += count
        totals[outcome] += count
    return {"window": window, "bucket": unit, "since": since.isoformat(), "series": list(series.values()),
            "totals": totals, "most_refused_actions": top["actions"], "most_refused_agents": top["agents"]}


@router.get("/certificates/{certificate_id}", responses=raises("not_found"), summary="A certificate and its log index",
            response_model=responses.CertificateView)
async def get_certificate(certificate_id: Text, request: Request,
                          caller: Annotated[Caller, require("certificates.read")]) -> dict[str, Any]:
    """The signed certificate exactly as logged."""
    record = await _certificate(services_of(request), caller, certificate_id)
    return {"certificate": json.loads(record.body), "log_index": record.log_index}


@router.get("/certificates/{certificate_id}/proof", summary="The evidence bundle of a certificate",
            responses=raises("not_found", "evidence_mismatch"), response_model=responses.CertificateProof)
async def certificate_proof(certificate_id: Text, request: Request,
                            caller: Annotated[Caller, require("certificates.read")]) -> dict[str, Any]:
    """Inclusion proof of the certificate's leaf in a signed checkpoint, as a C2SP tlog-proof bundle
    that `licet verify --bundle` checks offline."""
    services = services_of(request)
    record = await _certificate(services, caller, certificate_id)
    note = await checkpoint_covering(services, caller.tenant_id, record.log_index + 1)
    size = parse_checkpoint(note).size
    async with services.db.read() as session:
        proof = await session.run_sync(lambda s: TransparencyLog(
            DatabaseLogStore(s.connection(), caller.tenant_id), services.origin(caller.tenant_id),
        ).inclusion_proof(record.log_index, size))
    try:
        bundle = make_bundle(record.body.encode(), proof, note)
    except BundleError as exc:  # the stored row is not the certificate the log holds (altered after logging)
        _log.error("evidence_mismatch", tenant=caller.tenant_id, certificate_id=certificate_id,
                   log_index=record.log_index, detail=str(exc))
        raise ApiError(500, "evidence_mismatch", f"certificate {certificate_id} does not match its log entry "
                       f"{record.log_index}, so no proof can be built: {exc}") from exc
    return {"log_index": record.log_index, "tree_size": size, "proof": [_b64(h) for h in proof.hashes],
            "checkpoint": note, "bundle": bundle}


@router.get("/evidence/checkpoint", summary="The newest signed checkpoint of the tenant's log",
            response_model=responses.Checkpoint)
async def latest_checkpoint(request: Request, caller: Annotated[Caller, require("evidence.read")],
                            ) -> dict[str, Any]:
    """Signed at the log's current size if the newest kept one is older."""
    services = services_of(request)
    async with services.db.read() as session:
        size = await session.run_sync(lambda s: DatabaseLogStore(s.connection(), caller.tenant_id).size())
    return _checkpoint_json(await checkpoint_covering(services, caller.tenant_id, size))


@router.get("/evidence/checkpoints", summary="The signed checkpoints kept, newest first",
            response_model=responses.CheckpointsPage)
async def list_checkpoints(request: Request, caller: Annotated[Caller, require("evidence.read")],
                           before: Annotated[int | None, Query(ge=0, le=INT64_MAX,
                                                               description="Tree size to page before")] = None,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Each kept checkpoint's tree size and when it was signed (its note: `/evidence/checkpoints/{size}`)."""
    query = select(LogCheckpoint.size, LogCheckpoint.created_at).where(LogCheckpoint.tenant_id == caller.tenant_id)
    if before is not None:
        query = query.where(LogCheckpoint.size < before)
    async with services_of(request).db.read() as session:
        rows = (await session.execute(query.order_by(LogCheckpoint.size.desc()).limit(limit))).all()
    items = [{"size": r.size, "signed_at": r.created_at.isoformat()} for r in rows]
    return {"checkpoints": items, "next_before": items[-1]["size"] if len(items) == limit else None}


@router.get("/evidence/checkpoints/{size}", summary="The checkpoint kept for a tree size",
            responses=raises("not_found"), response_model=responses.Checkpoint)
async def checkpoint_at(size: Annotated[int, Path(ge=0, le=INT64_MAX)], request: Request,
                        caller: Annotated[Caller, require("evidence.read")]) -> dict[str, Any]:
    """Only sizes a checkpoint was signed at exist."""
    async with services_of(request).db.read() as session:
        note = await session.run_sync(lambda s: DatabaseLogStore(s.connection(), caller.tenant_id).checkpoint_at(size))
    if note is None:
        raise not_found("checkpoint")
    return _checkpoint_json(note)


@router.get("/evidence/consistency", summary="Proof that one tree size is a prefix of another",
            responses=raises("invalid_range"), response_model=responses.ConsistencyProof)
async def consistency(request: Request, caller: Annotated[Caller, require("evidence.read")],
                      first: Annotated[int, Query(ge=0)], second: Annotated[int, Query(ge=0)]) -> dict[str, Any]:
    """RFC 9162 consistency proof between two sizes of the tenant's log."""
    services = services_of(request)
    async with services.db.read() as session:
        try:
            proof = await session.run_sync(lambda s: TransparencyLog(
                DatabaseLogStore(s.connection(), caller.tenant_id), services.origin(caller.tenant_id),
            ).consistency_proof(first, second))
        except LogError as exc:
            raise ApiError(422, "invalid_range", str(exc), "second") from exc
    return {"first": first, "second": second, "proof": [_b64(h) for h in proof.hashes]}


@router.get("/evidence/entries", summary="A page of log entries", response_model=responses.EntriesPage)
async def entries(request: Request, caller: Annotated[Caller, require("evidence.entries")],
                  start: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Entries `start..start+limit-1`: each leaf hash and certificate."""
    async with services_of(request).db.read() as session:
        rows = await session.run_sync(lambda s: DatabaseLogStore(s.connection(), caller.tenant_id).read_entries(
            start, min(start + limit, INT64_MAX)))
    return {"start": start, "entries": [{"index": start + i, "leaf_hash": _b64(h), "certificate": json.loads(d)}
                                        for i, (h, d) in enumerate(rows)],
            "next_start": start + len(rows) if len(rows) == limit else None}


@router.get("/evidence/keys", summary="The public keys that verify certificates and checkpoints",
            response_model=responses.EvidenceKeys)
async def keys(request: Request, caller: Annotated[Caller, require("evidence.read")]) -> dict[str, Any]:
    """What an offline verifier needs to trust: every key the deployment signed with, signs with or
    will sign with (server/keyring.py), each with its period."""
    services = services_of(request)
    now, origin = utcnow(), services.origin(caller.tenant_id)
    keyring = services.keys.keyring(recheck=True)  # one stat: a rotation is published at once
    history = [{**entry.period.to_json(), "status": entry.status(now),
                "log_verifier_key": NoteVerifier(origin, entry.period.public_key).vkey()} for entry in keyring.entries]
    signing = keyring.entry_at(now).period.public_key
    others = [period.public_key for period in reversed(keyring.history) if period.public_key != signing]
    return {"certificate_keys": [key.to_json() for key in (signing, *others)],
            "log": {"origin": origin, "verifier_key": NoteVerifier(origin, signing).vkey()},
            "history": history}

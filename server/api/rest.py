"""REST routes: health, metrics, stream tokens, listeners (enrol, list, get, delete) and
personality (a listener's cached estimate, or a one-off clip)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from server.enrolment import enrol_clip, personality_of_clip
from server.errors import Busy, ConsentRequired, TooLarge, UnsupportedMedia
from server.personality import (
    CAVEAT,
    Estimate,
    PersonalityConsent,
    PersonalityNotKept,
    behaviour_from_blob,
    estimate,
    model_version,
    payload,
)
from server.store import IdempotencyConflict, InvalidListener, ListenerRecord

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")

VIDEO_TYPES = ("video/", "application/octet-stream")
CHUNK = 1 << 20


def services(request: Request) -> Any:  # -> Services (imported lazily: no cycle)
    return request.app.state.services


def api_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """The API-key check of every REST route but the health probes."""
    bearer = request.headers.get("authorization", "")
    presented = x_api_key or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
    services(request).guard.check_key(presented)


Protected = Depends(api_key)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code", "message", "field"}}``."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {401: "missing or wrong API key", 404: "no such listener",
                 409: "Idempotency-Key reused with other form fields", 413: "upload too large",
                 415: "not a video", 422: "invalid input (names the field)",
                 503: "models loading, server draining or busy"}  # fmt: skip
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


# -- health and metrics --------------------------------------------------------------------------


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/health/ready", tags=["health"], responses={503: {"description": "not ready"}})
async def ready(request: Request) -> JSONResponse:
    """Ready once the models are loaded and the store is open; 503 while loading or draining."""
    s = services(request)
    if s.engine is None or s.store is None:
        status = "failed" if s.load_error else "loading"
        return JSONResponse({"status": status, "detail": s.load_error}, status_code=503)
    if s.engine.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ready", "device": str(s.engine.device),
                         "sessions": s.engine.session_count})  # fmt: skip


@router.get("/metrics", tags=["health"], dependencies=[Protected], response_class=Response,
            responses=_errors(401))  # fmt: skip
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(services(request).metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")  # fmt: skip


# -- stream tokens -------------------------------------------------------------------------------


class SessionToken(BaseModel):
    token: str
    expires_at: float
    """Unix time after which the token no longer opens a stream."""
    stream_path: str


@router.post("/sessions", tags=["stream"], dependencies=[Protected], status_code=201,
             responses=_errors(401))  # fmt: skip
async def mint_token(request: Request) -> SessionToken:
    """A short-lived, single-use token for a browser to open ``/v1/stream?token=…``."""
    token, expiry = services(request).guard.mint()
    return SessionToken(token=token, expires_at=expiry, stream_path=f"/v1/stream?token={token}")


# -- listeners -----------------------------------------------------------------------------------


class Listener(BaseModel):
    id: str
    name: str
    consent: bool
    created_at: str
    clip: dict[str, Any]
    model: str
    enrolment_bytes: int


class ListenerList(BaseModel):
    listeners: list[Listener]
    total: int
    limit: int
    offset: int


def _listener(r: ListenerRecord) -> Listener:
    return Listener(
        id=r.id,
        name=r.name,
        consent=r.consent,
        created_at=r.created_at.isoformat(),
        clip=r.clip,
        model=r.model_hash,
        enrolment_bytes=r.enrolment_bytes,
    )


def _check_upload(request: Request, clip: UploadFile, limit: int) -> None:
    """Refuse, before reading it, an upload that announces too many bytes or is not a video."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + CHUNK:
        raise TooLarge(f"uploads are limited to {limit} bytes", field="clip")
    ctype = (clip.content_type or "").lower()
    if not ctype.startswith(VIDEO_TYPES):
        raise UnsupportedMedia(f"the clip must be a video (got content type {ctype!r})",
                               field="clip")  # fmt: skip


async def _spool(upload: UploadFile, limit: int) -> str:
    """Copy the upload to a temporary file, refusing more than ``limit`` bytes."""
    fd, path = tempfile.mkstemp(prefix="rapport-clip-", suffix=".bin")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the clip is larger than {limit} bytes", field="clip")
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


@router.post("/listeners", tags=["listeners"], dependencies=[Protected], status_code=201,
             response_model=Listener,
             responses={200: {"model": Listener, "description": "a retried request (the same "
                              "Idempotency-Key): the listener the first attempt made"},
                        **_errors(401, 409, 413, 415, 422, 503)})  # fmt: skip
async def enrol_listener(
    request: Request,
    clip: Annotated[UploadFile, File(description="video of the person, at least 10 s")],
    name: Annotated[str, Form(max_length=100)],
    consent: Annotated[bool | None, Form(description="explicit consent of the person")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Enrol a listener from a clip: offline PFL + extraction, style and shifts, stored."""
    s = services(request)
    settings = s.settings
    if consent is None:
        raise ConsentRequired("the form field 'consent' must be given explicitly (true or false)",
                              field="consent")  # fmt: skip
    if not name.strip():  # refused before the extraction, not after seconds of it
        raise InvalidListener("name", "must not be empty")
    _check_upload(request, clip, settings.upload_max_bytes)
    store, engine = s.ready_store(), s.ready_engine()
    if idempotency_key:
        earlier = await asyncio.to_thread(store.find_by_idempotency_key, idempotency_key)
        if earlier is not None:  # a retry: answer it without a second extraction
            if (earlier.name, earlier.consent) != (name.strip(), consent):
                raise IdempotencyConflict(idempotency_key)
            return JSONResponse(_listener(earlier).model_dump(), status_code=200)
    if s.enrol_slots.locked():
        raise Busy("too many enrolments in progress; retry shortly")
    async with s.enrol_slots:
        path = await _spool(clip, settings.upload_max_bytes)
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                s.enrol_pool,
                lambda: enrol_clip(
                    path,
                    engine.models,
                    min_seconds=settings.enrol_min_seconds,
                    max_seconds=settings.enrol_max_seconds,
                    personality=consent,
                ),
            )
        except Exception:
            s.metrics.enrolments.labels("failed").inc()
            raise
        finally:
            os.unlink(path)
    record, created = await asyncio.to_thread(
        store.create,
        name=name,
        consent=consent,
        enrolment=result.blob,
        model_hash=result.enrolment.model_hash,
        clip=result.clip,
        idempotency_key=idempotency_key,
        behaviour=result.behaviour,
    )
    if created and result.personality is not None:
        est = result.personality
        record = await asyncio.to_thread(store.set_personality, record.id, est.traits,
                                         est.model_version, est.computed_at)  # fmt: skip
    s.metrics.enrolments.labels("created" if created else "replayed").inc()
    return JSONResponse(_listener(record).model_dump(), status_code=201 if created else 200)


@router.get("/listeners", tags=["listeners"], dependencies=[Protected],
            responses=_errors(401, 422))  # fmt: skip
async def list_listeners(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ListenerList:
    store = services(request).ready_store()
    records = await asyncio.to_thread(store.list, limit, offset)
    total = await asyncio.to_thread(store.count)
    return ListenerList(listeners=[_listener(r) for r in records], total=total, limit=limit,
                        offset=offset)  # fmt: skip


@router.get("/listeners/{listener_id}", tags=["listeners"], dependencies=[Protected],
            responses=_errors(401, 404))  # fmt: skip
async def get_listener(request: Request, listener_id: str) -> Listener:
    store = services(request).ready_store()
    return _listener(await asyncio.to_thread(store.get, listener_id))


@router.delete("/listeners/{listener_id}", tags=["listeners"], dependencies=[Protected],
               status_code=204, responses=_errors(401, 404))  # fmt: skip
async def delete_listener(request: Request, listener_id: str) -> Response:
    """Erase the listener and everything stored about that person."""
    store = services(request).ready_store()
    await asyncio.to_thread(store.delete, listener_id)
    return Response(status_code=204)


# -- personality ---------------------------------------------------------------------------------


USAGE_NOTE = (
    "**Usage note.** The scores come from a model trained on the simulated persons of Rapport's "
    "synthetic world, whose traits are known (unless the operator retrained it on real data with "
    "self-reported traits); on real people they are uncalibrated. They are not a psychological "
    "assessment and must not be used to make decisions about people. The EU AI Act (Art. "
    "5(1)(f)) prohibits AI systems that infer emotions of natural persons from biometric data "
    "in the workplace and in education institutions (save for medical or safety reasons): do "
    "not use this endpoint there."
)

GET_PERSONALITY = (
    "The listener's Big-Five (each 0..1, higher = more of the named trait; neuroticism, not "
    "emotional stability), computed at enrolment and cached; recomputed from the kept behaviour "
    "when the personality model's version has changed since. Only for listeners enrolled with "
    "consent.\n\n" + USAGE_NOTE
)
POST_PERSONALITY = (
    "The Big-Five of the person in a clip, with the checks and limits of enrolment; nothing is "
    "stored. The form field `consent` must be true.\n\n" + USAGE_NOTE
)


class TraitScore(BaseModel):
    name: Literal["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    value: float
    """The estimate, 0..1."""
    scale: tuple[int, int]
    """Always ``[0, 1]``."""
    polarity: str
    """What a higher value means (``"higher = more neurotic"`` for neuroticism)."""


class Personality(BaseModel):
    """A Big-Five estimate: the five traits in the order openness, conscientiousness,
    extraversion, agreeableness, neuroticism."""

    listener_id: str | None
    """The listener it belongs to; ``null`` for a one-off clip."""
    model_version: str
    computed_at: str
    """ISO 8601, UTC."""
    traits: list[TraitScore]
    caveat: str = CAVEAT


def _personality_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {401: "missing or wrong API key", 404: "no such listener (listener_not_found)",
                 409: "the listener was enrolled without consent (consent_required), or its "
                      "behaviour was not kept (personality_not_computable)",
                 413: "upload too large", 415: "not a video",
                 422: "invalid input (names the field; consent must be true)",
                 503: "models loading, no personality model (personality_unavailable), server "
                      "draining or busy"}  # fmt: skip
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


@router.get("/listeners/{listener_id}/personality", tags=["personality"],
            dependencies=[Protected], response_model=Personality, description=GET_PERSONALITY,
            responses=_personality_errors(401, 404, 409, 503))  # fmt: skip
async def listener_personality(request: Request, listener_id: str) -> JSONResponse:
    """The listener's Big-Five (see ``GET_PERSONALITY``)."""
    s = services(request)
    store = s.ready_store()
    record = await asyncio.to_thread(store.get, listener_id)
    if not record.consent:
        raise PersonalityConsent("the listener was enrolled without consent; no personality "
                                 "estimate is made for them")  # fmt: skip
    models = s.ready_engine().models
    version = model_version(models)
    if record.personality is not None and record.personality_model == version:
        return JSONResponse(payload(record.personality, version, record.personality_at,
                                    record.id))  # fmt: skip
    blob = await asyncio.to_thread(store.get_behaviour, record.id)
    if blob is None:
        raise PersonalityNotKept("the listener's behaviour was not kept at enrolment; enrol "
                                 "them again to get a personality estimate")  # fmt: skip

    def compute() -> Estimate:
        return estimate(models, behaviour_from_blob(blob))

    try:
        est = await asyncio.get_running_loop().run_in_executor(s.enrol_pool, compute)
    except ValueError as exc:
        raise PersonalityNotKept(f"the kept behaviour cannot be read: {exc}") from exc
    await asyncio.to_thread(store.set_personality, record.id, est.traits, est.model_version,
                            est.computed_at)  # fmt: skip
    log.info("personality of %s recomputed with %s", record.id, est.model_version)
    return JSONResponse(payload(est.traits, est.model_version, est.computed_at, record.id))


@router.post("/personality", tags=["personality"], dependencies=[Protected],
             response_model=Personality, description=POST_PERSONALITY,
             responses=_personality_errors(401, 413, 415, 422, 503))  # fmt: skip
async def clip_personality(
    request: Request,
    clip: Annotated[UploadFile, File(description="video of the person, at least 10 s")],
    consent: Annotated[bool | None, Form(description="explicit consent of the person; must "
                                                     "be true")] = None,
) -> JSONResponse:
    """The Big-Five of the person in a one-off clip (see ``POST_PERSONALITY``)."""
    s = services(request)
    settings = s.settings
    if consent is not True:
        raise ConsentRequired("the form field 'consent' must be true: the person must agree to "
                              "a personality estimate", field="consent")  # fmt: skip
    _check_upload(request, clip, settings.upload_max_bytes)
    models = s.ready_engine().models
    model_version(models)  # 503 before reading the upload when there is no model
    if s.enrol_slots.locked():
        raise Busy("too many clips in progress; retry shortly")
    async with s.enrol_slots:
        path = await _spool(clip, settings.upload_max_bytes)
        try:
            est = await asyncio.get_running_loop().run_in_executor(
                s.enrol_pool,
                lambda: personality_of_clip(path, models, min_seconds=settings.enrol_min_seconds,
                                            max_seconds=settings.enrol_max_seconds),
            )  # fmt: skip
        finally:
            os.unlink(path)
    return JSONResponse(payload(est.traits, est.model_version, est.computed_at, None))

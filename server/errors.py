"""Domain errors of the service: a code, a reason and the HTTP status they map to.

Raised by the engine and the enrolment path (which know nothing of HTTP or WebSockets) and
translated to responses in one place, :mod:`server.api.errors`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A failure the client can act on; ``code`` is stable, ``reason`` is for people."""

    code = "error"
    status = 400

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class BadMedia(ServiceError):
    """An upload that is not a usable clip: corrupt, faceless, too short or too long."""

    code = "bad_media"
    status = 422


class UnsupportedMedia(ServiceError):
    code = "unsupported_media_type"
    status = 415


class TooLarge(ServiceError):
    code = "too_large"
    status = 413


class ConsentRequired(ServiceError):
    code = "consent_required"
    status = 422


class Unauthorized(ServiceError):
    code = "unauthorized"
    status = 401


class Busy(ServiceError):
    """The service is at a limit (sessions, enrolment queue) or draining; retry later."""

    code = "busy"
    status = 503


class NotReady(ServiceError):
    code = "not_ready"
    status = 503

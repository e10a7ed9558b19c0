"""API keys and short-lived single-session stream tokens.

REST calls carry the key in ``X-API-Key`` (or ``Authorization: Bearer``). Browsers cannot set
headers on a WebSocket, so ``POST /v1/sessions`` mints a token that the page passes as
``?token=``: ``v1.<expiry>.<nonce>.<mac>``, an HMAC over expiry and nonce with a key derived
from the API key, so every instance sharing the key can check it without shared state. A token
opens one stream (its nonce is remembered until it expires) and expires after ``token_ttl_s``.
With no API key set the service is open, and says so loudly at start.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from server.errors import Unauthorized

PREFIX = "v1"


class Guard:
    """Checks keys and tokens; thread-safe."""

    def __init__(self, api_key: str | None, token_ttl_s: float) -> None:
        self.api_key = api_key or None
        self.ttl = token_ttl_s
        secret = (api_key or secrets.token_hex(32)).encode()
        self._mac_key = hmac.new(secret, b"rapport stream token", hashlib.sha256).digest()
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.api_key is None

    def check_key(self, presented: str | None) -> None:
        if self.api_key is None:
            return
        if not presented or not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            raise Unauthorized("a valid API key is required (header X-API-Key)")

    def mint(self, now: float | None = None) -> tuple[str, float]:
        """A new stream token and its expiry (Unix seconds)."""
        expiry = (now or time.time()) + self.ttl
        nonce = secrets.token_urlsafe(12)
        body = f"{PREFIX}.{expiry:.3f}.{nonce}"
        return f"{body}.{self._mac(body)}", expiry

    def _mac(self, body: str) -> str:
        return hmac.new(self._mac_key, body.encode(), hashlib.sha256).hexdigest()[:32]

    def redeem(self, token: str, now: float | None = None) -> None:
        """Accept ``token`` once; :class:`Unauthorized` if forged, expired or used."""
        now = now or time.time()
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != PREFIX:  # v1 . seconds . millis . nonce . mac
            raise Unauthorized("malformed stream token")
        body, mac = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise Unauthorized("invalid stream token")
        expiry = float(f"{parts[1]}.{parts[2]}")
        if expiry < now:
            raise Unauthorized("the stream token has expired; mint a new one")
        with self._lock:
            for old, exp in list(self._used.items()):
                if exp < now:
                    del self._used[old]
            if parts[3] in self._used:
                raise Unauthorized("the stream token was already used")
            self._used[parts[3]] = expiry

    def check_stream(self, *, token: str | None, key: str | None) -> None:
        """A stream may open with a token, or with the API key (non-browser clients)."""
        if self.open:
            return
        if token:
            self.redeem(token)
        else:
            self.check_key(key)

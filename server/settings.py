"""Service settings: read from the environment (prefix ``RAPPORT_``) when the app is built.

Nothing here runs at import time; :func:`load_settings` is called by the app factory and the
``rapport serve`` command. Every limit the service enforces is a setting with a sane default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "rapport"


class Settings(BaseSettings):
    """All service settings; ``RAPPORT_<NAME>`` in the environment overrides each."""

    model_config = SettingsConfigDict(env_prefix="RAPPORT_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    weights_dir: Path | None = None
    """Directory with the generator, personal and PosNet weights (default: the bundled ones)."""
    data_dir: Path = DEFAULT_DATA_DIR
    store_url: str | None = None
    """SQLAlchemy URL of the listener store; default a SQLite file in ``data_dir``."""
    log_level: str = "info"

    # security
    api_key: SecretStr | None = None
    """REST and stream key; unset = open (local use only, announced loudly at start)."""
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000", "http://localhost:8000"]
    )
    """Origins allowed at the WebSocket upgrade (``*`` allows any); comma-separated in the env."""
    token_ttl_s: float = Field(60.0, gt=0, le=3600)
    """Lifetime of a stream token minted by ``POST /v1/sessions`` (it must be used by then)."""

    # streaming limits
    max_sessions: int = Field(32, ge=1, le=1024)
    max_media_bytes: int = Field(512 * 1024, ge=1024)
    max_control_bytes: int = Field(4096, ge=256)
    max_messages_per_s: float = Field(200.0, gt=0)
    max_lead_s: float = Field(2.0, gt=0)
    """How far the media's capture clock may run ahead of the server's (faster than real time)."""
    session_max_s: float = Field(3600.0, gt=0)
    idle_timeout_s: float = Field(30.0, gt=0)
    resume_grace_s: float = Field(30.0, ge=0)
    max_errors: int = Field(50, ge=1)
    """Non-fatal protocol errors a session may cause before it is closed (code 4400)."""
    video_backlog: int = Field(10, ge=1, le=100)
    """Frames a session may queue for perception before the oldest is dropped."""
    stats_interval_s: float = Field(1.0, gt=0)

    # engine
    perception_workers: int = Field(2, ge=1, le=64)
    max_batch: int = Field(64, ge=1, le=1024)
    window_deadline_s: float = Field(0.32, gt=0)
    """A window that waited longer than this for the generator is reported late."""
    drain_timeout_s: float = Field(10.0, ge=0)

    # enrolment
    upload_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    enrol_min_seconds: float = Field(10.0, gt=0)
    enrol_max_seconds: float = Field(120.0, gt=0)
    enrol_workers: int = Field(1, ge=1, le=16)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def database_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'rapport.db'}"

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin header (a non-browser client) passes; browsers must be on the list."""
        if origin is None:
            return True
        return "*" in self.allowed_origins or origin.rstrip("/") in {
            o.rstrip("/") for o in self.allowed_origins
        }


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with keyword overrides (tests, the CLI)."""
    return Settings(**overrides)

"""The current shape of every table, used by queries.

Portable SQLAlchemy Core types only, so the same tables work on SQLite and PostgreSQL.
`migrations.py` creates and upgrades them; a test checks that a fully migrated database
matches these definitions.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine.interfaces import Dialect

metadata = MetaData()


class ObjectId(TypeDecorator[str]):
    """An object id, key or token id: String(64) in the schema (the migrations' type).

    Ids are looked up by what peers send (API paths, stream keys, Basic auth user names), and
    PostgreSQL refuses a NUL character in text where SQLite compares it. No stored id holds
    one (Relay makes them from [A-Za-z0-9]), so a value with NUL is bound with U+FFFD in its
    place: the lookup finds nothing on both databases instead of failing on one."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


ID = ObjectId()
# Unix seconds: past 2038 (BIGINT on PostgreSQL, migration v5; SQLite's INTEGER is 64-bit).
UnixSeconds = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # hex SHA-256 of the secret
    Column("created_at", UnixSeconds, nullable=False),
)

live_streams = Table(
    "live_streams",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # creation order
    Column("id", ID, nullable=False, unique=True),
    Column("created_at", UnixSeconds, nullable=False),
    Column("stream_key", ID, nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("latency_mode", String(16), nullable=False),
    Column("reconnect_window", Float, nullable=False),
    Column("max_continuous_duration", Integer, nullable=False),
    Column("audio_only", Boolean, nullable=False),
    Column("use_slate_for_standard_latency", Boolean, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("srt_passphrase", String(80), nullable=False),
    Column("new_asset_settings", JSON, nullable=False),
    Column("passthrough", Text),
    Column("reconnect_slate_url", Text),
    Column("meta", JSON),
    Column("active_asset_id", ID),
    Column("active_ingest_protocol", String(8)),
)

playback_ids = Table(
    "playback_ids",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("policy", String(16), nullable=False),
    Column("object_type", String(16), nullable=False),  # live_stream | asset
    Column("object_id", ID, nullable=False, index=True),
)

simulcast_targets = Table(
    "simulcast_targets",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("live_stream_id", ID, nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("stream_key", Text),
    Column("passthrough", Text),
    Column("status", String(16), nullable=False),
    Column("error_severity", String(16)),
)

assets = Table(
    "assets",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("created_at", UnixSeconds, nullable=False),
    Column("live_stream_id", ID, index=True),
    Column("status", String(16), nullable=False),
    Column("is_live", Boolean, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("duration", Float),
    Column("passthrough", Text),
    Column("ingest_type", String(16)),
    Column("recording_times", JSON, nullable=False),
    Column("tracks", JSON, nullable=False),
    Column("settings", JSON, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # delivery order
    Column("id", String(36), nullable=False, unique=True),  # uuid4, stable across retries
    Column("type", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", ID, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("delivered_at", Float),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("url", Text, primary_key=True),
    # The last event seq queued for this endpoint: an endpoint added later starts with the
    # events after it was added, not with the whole history.
    Column("cursor", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", Text, nullable=False),
    Column("event_seq", Integer, nullable=False, index=True),
    Column("object_id", ID, nullable=False),  # copied from the event: the order key
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("attempt_log", JSON, nullable=False),  # the last few tries, for the envelope
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    # The retry window starts here, not at queueing: an event held behind an earlier one of
    # its object still gets the whole window once its turn comes.
    Column("first_attempt_at", Float),
    Column("last_error", Text),
    Column("delivered_at", Float),
    # Set while one deliverer (of any node) tries it: the token of that claim, and when the
    # claim lapses, so that a node that died mid-try hands the delivery on (migration v6).
    Column("claim", String(36)),
    Column("claimed_until", Float),
    UniqueConstraint("endpoint", "event_seq"),
    Index("ix_webhook_deliveries_head", "endpoint", "status", "object_id", "event_seq"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # creation order
    Column("id", ID, nullable=False, unique=True),
    Column("created_at", UnixSeconds, nullable=False),
    # SubjectPublicKeyInfo PEM of the RSA key; the private key is never stored.
    Column("public_key", Text, nullable=False),
)

playback_restrictions = Table(
    "playback_restrictions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("created_at", UnixSeconds, nullable=False),
    Column("updated_at", UnixSeconds, nullable=False),
    Column("referrer", JSON, nullable=False),  # {allowed_domains, allow_no_referrer}
    Column("user_agent", JSON, nullable=False),  # {allow_no_user_agent, allow_high_risk_...}
)

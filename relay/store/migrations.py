"""Versioned schema migrations, run in order when the store opens.

Each migration is a function of a synchronous connection and owns a frozen copy of the
tables it creates or changes, so that editing `tables.py` later never rewrites history.
A data dir made by an older Relay is upgraded in place, one version per transaction.
A data dir made by a newer Relay is refused rather than guessed at.
"""

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from relay.store.tables import schema_version

Migration = Callable[[Connection], None]


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer Relay than this one."""


def _v1_control_plane(conn: Connection) -> None:
    """Access tokens, live streams, playback ids, simulcast targets and assets."""
    md = MetaData()
    id_ = String(64)
    Table("access_tokens", md,
          Column("id", id_, primary_key=True),
          Column("secret_hash", String(64), nullable=False),
          Column("created_at", Integer, nullable=False))
    Table("live_streams", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("created_at", Integer, nullable=False),
          Column("stream_key", id_, nullable=False, unique=True),
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
          Column("active_asset_id", id_),
          Column("active_ingest_protocol", String(8)))
    Table("playback_ids", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("policy", String(16), nullable=False),
          Column("object_type", String(16), nullable=False),
          Column("object_id", id_, nullable=False, index=True))
    Table("simulcast_targets", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("live_stream_id", id_, nullable=False, index=True),
          Column("url", Text, nullable=False),
          Column("stream_key", Text),
          Column("passthrough", Text),
          Column("status", String(16), nullable=False),
          Column("error_severity", String(16)))
    Table("assets", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("created_at", Integer, nullable=False),
          Column("live_stream_id", id_, index=True),
          Column("status", String(16), nullable=False),
          Column("is_live", Boolean, nullable=False),
          Column("test", Boolean, nullable=False),
          Column("duration", Float),
          Column("passthrough", Text),
          Column("ingest_type", String(16)),
          Column("recording_times", JSON, nullable=False),
          Column("tracks", JSON, nullable=False),
          Column("settings", JSON, nullable=False))
    md.create_all(conn)


def _v2_event_outbox(conn: Connection) -> None:
    """The webhook outbox: events written in the transaction of the change they report."""
    md = MetaData()
    Table("events", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", String(36), nullable=False, unique=True),
          Column("type", String(64), nullable=False),
          Column("object_type", String(32), nullable=False),
          Column("object_id", String(64), nullable=False),
          Column("data", JSON, nullable=False),
          Column("created_at", Float, nullable=False),
          Column("attempts", Integer, nullable=False, default=0),
          Column("delivered_at", Float))
    md.create_all(conn)


def _v3_webhook_deliveries(conn: Connection) -> None:
    """Per-endpoint delivery state of the outbox's events, and each endpoint's cursor."""
    md = MetaData()
    Table("webhook_endpoints", md,
          Column("url", Text, primary_key=True),
          Column("cursor", Integer, nullable=False),
          Column("created_at", Float, nullable=False))
    Table("webhook_deliveries", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("endpoint", Text, nullable=False),
          Column("event_seq", Integer, nullable=False, index=True),
          Column("object_id", String(64), nullable=False),
          Column("status", String(16), nullable=False),
          Column("attempts", Integer, nullable=False),
          Column("attempt_log", JSON, nullable=False),
          Column("created_at", Float, nullable=False),
          Column("next_attempt_at", Float, nullable=False),
          Column("first_attempt_at", Float),
          Column("last_error", Text),
          Column("delivered_at", Float),
          UniqueConstraint("endpoint", "event_seq"),
          Index("ix_webhook_deliveries_head", "endpoint", "status", "object_id", "event_seq"))
    md.create_all(conn)


def _v4_signed_playback(conn: Connection) -> None:
    """Signing keys (public halves only) and playback restrictions (issue 17)."""
    md = MetaData()
    id_ = String(64)
    Table("signing_keys", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("created_at", Integer, nullable=False),
          Column("public_key", Text, nullable=False))
    Table("playback_restrictions", md,
          Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("id", id_, nullable=False, unique=True),
          Column("created_at", Integer, nullable=False),
          Column("updated_at", Integer, nullable=False),
          Column("referrer", JSON, nullable=False),
          Column("user_agent", JSON, nullable=False))
    md.create_all(conn)


# The Unix-seconds columns that v1 and v4 made INTEGER: 32 bits on PostgreSQL (SQLite's are 64).
_UNIX_SECONDS_COLUMNS = (("access_tokens", "created_at"), ("live_streams", "created_at"),
                         ("assets", "created_at"), ("signing_keys", "created_at"),
                         ("playback_restrictions", "created_at"),
                         ("playback_restrictions", "updated_at"))


def _v5_wide_timestamps(conn: Connection) -> None:
    """Unix seconds as 64-bit integers on PostgreSQL: its INTEGER overflows in January 2038.
    Nothing to do on SQLite, whose INTEGER holds 64 bits already."""
    if conn.dialect.name != "postgresql":
        return
    for table, column in _UNIX_SECONDS_COLUMNS:
        conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE BIGINT"))


def _v6_webhook_claims(conn: Connection) -> None:
    """A delivery's claim: which deliverer is trying it, and until when (issue 19: several
    nodes deliver from one outbox). Both empty on a delivery nobody is trying."""
    conn.execute(text("ALTER TABLE webhook_deliveries ADD COLUMN claim VARCHAR(36)"))
    conn.execute(text("ALTER TABLE webhook_deliveries ADD COLUMN claimed_until FLOAT"))


# Append only: position + 1 is the schema version a migration produces.
MIGRATIONS: tuple[Migration, ...] = (_v1_control_plane, _v2_event_outbox,
                                     _v3_webhook_deliveries, _v4_signed_playback,
                                     _v5_wide_timestamps, _v6_webhook_claims)
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The schema version of the database behind `conn` (0 for an empty one)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    version = conn.execute(select(schema_version.c.version)).scalar()
    return int(version or 0)


def migrate(conn: Connection, target: int = LATEST_VERSION) -> tuple[int, int]:
    """Bring the schema up to `target`; return (version before, version after).

    The caller runs this inside one transaction, so a failed upgrade leaves the old schema.
    """
    before = current_version(conn)
    if before > LATEST_VERSION:
        raise SchemaTooNewError(
            f"the database has schema version {before}, but this Relay knows only up to "
            f"{LATEST_VERSION}; upgrade Relay or use another data dir"
        )
    if before == 0:
        schema_version.create(conn, checkfirst=True)
        conn.execute(schema_version.insert().values(version=0))
    for version in range(before + 1, target + 1):
        MIGRATIONS[version - 1](conn)
        conn.execute(schema_version.update().values(version=version))
    return before, max(before, target)

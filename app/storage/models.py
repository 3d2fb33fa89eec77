"""The relational model: sites, chairs, devices, patients, sessions, samples, events.

Times are `UTCDateTime`: stored in UTC, returned timezone-aware on every backend.
Patients are pseudonymous: an opaque id and display initials, never a name.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.storage.types import UTCDateTime
from monitor.lifecycle import AlarmRecord, AlarmState
from monitor.protocol import AlarmKind, Phase, Priority
from monitor.vitals import Vital

# Named constraints let one Alembic history alter tables on SQLite (batch mode) and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# A session's phase is the alarm engine's own enum, not a copy of it: the codes stored, served
# and evaluated are one definition.
SessionPhase = Phase


class EventKind(enum.StrEnum):
    CHECK_IN = "check_in"
    BASELINE_START = "baseline_start"
    INFUSION_START = "infusion_start"
    RATE_CHANGE = "rate_change"
    INFUSION_PAUSE = "infusion_pause"
    INFUSION_RESUME = "infusion_resume"
    INFUSION_STOP = "infusion_stop"
    BP_MEDICATION = "bp_medication"
    NOTE = "note"
    DISCHARGE = "discharge"


def _str_enum(cls: type[enum.StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    chairs: Mapped[list[Chair]] = relationship(back_populates="site", order_by="Chair.position")


class Chair(Base):
    __tablename__ = "chairs"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    position: Mapped[int] = mapped_column(Integer, default=0)

    site: Mapped[Site] = relationship(back_populates="chairs")
    devices: Mapped[list[Device]] = relationship(back_populates="chair")


class Device(Base):
    """A bedside device or gateway channel; `identifier` is what it calls itself on the wire."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(40), default="multiparameter")
    chair_id: Mapped[int | None] = mapped_column(
        ForeignKey("chairs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    chair: Mapped[Chair | None] = relationship(back_populates="devices")


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    initials: Mapped[str] = mapped_column(String(8))
    weight_kg: Mapped[float | None] = mapped_column(Float)
    birth_year: Mapped[int | None] = mapped_column(Integer)


class InfusionSession(Base):
    """One patient's visit to one chair, from check-in to discharge."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_chair_id_ended_at", "chair_id", "ended_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chair_id: Mapped[int] = mapped_column(ForeignKey("chairs.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    phase: Mapped[SessionPhase] = mapped_column(_str_enum(SessionPhase))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The monitor's NIBP auto interval for this session, in seconds (0: no schedule);
    # NULL: the protocol's interval for the phase (PUT /api/v1/sessions/{id}/nibp-interval).
    nibp_interval_s: Mapped[float | None] = mapped_column(Float)

    chair: Mapped[Chair] = relationship()
    patient: Mapped[Patient] = relationship()


class Sample(Base):
    """One observed value, with the device's clock and Vigil's."""

    __tablename__ = "samples"
    __table_args__ = (
        Index("ix_samples_session_id_vital_device_time", "session_id", "vital", "device_time"),
        Index("ix_samples_chair_id_vital_received_time", "chair_id", "vital", "received_time"),
        Index("ix_samples_device_id_received_time", "device_id", "received_time"),
        # One row per measured moment: a resend is skipped by ingest (ON CONFLICT DO NOTHING).
        Index(
            "uq_samples_device_id_vital_device_time",
            "device_id",
            "vital",
            "device_time",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    chair_id: Mapped[int | None] = mapped_column(ForeignKey("chairs.id"))
    vital: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    device_time: Mapped[datetime] = mapped_column(UTCDateTime())
    received_time: Mapped[datetime] = mapped_column(UTCDateTime())
    quality: Mapped[int] = mapped_column(Integer, default=0)  # monitor.vitals.SampleQuality


class SessionEvent(Base):
    """Something that happened in a session, recorded by a person or a device."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_session_id_at", "session_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    kind: Mapped[EventKind] = mapped_column(_str_enum(EventKind))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(80))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)  # e.g. a rate in mg/kg/h
    unit: Mapped[str | None] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(Text)


class Alarm(Base):
    """An alarm's current state; its history is in `alarm_transitions`."""

    __tablename__ = "alarms"
    __table_args__ = (
        Index("ix_alarms_session_id_raised_at", "session_id", "raised_at"),
        Index("ix_alarms_chair_id_raised_at", "chair_id", "raised_at"),
        Index("ix_alarms_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the engine's alarm id
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    chair_id: Mapped[int] = mapped_column(ForeignKey("chairs.id"))
    rule_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # physiological | technical
    priority: Mapped[str] = mapped_column(String(16))  # current: low | medium | high | crisis
    state: Mapped[str] = mapped_column(String(16))  # raised | acknowledged | cleared
    text: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float)  # the one that raised it or brought it back
    limit_value: Mapped[float | None] = mapped_column(Float)
    condition_active: Mapped[bool] = mapped_column(Boolean)
    audio_paused: Mapped[bool] = mapped_column(Boolean)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    protocol_version: Mapped[str] = mapped_column(String(40))
    alarm_group: Mapped[str] = mapped_column(String(64))  # one alarm per session and group
    vital: Mapped[str | None] = mapped_column(String(16))  # what its tiers watch
    worst_value: Mapped[float | None] = mapped_column(Float)  # reached while it held

    # The one mapping between the engine's `AlarmRecord` and this row, both ways.

    @classmethod
    def of(cls, record: AlarmRecord, chair_id: int) -> Alarm:
        row = cls(id=record.alarm_id, chair_id=chair_id)
        row.follow(record)
        return row

    def follow(self, record: AlarmRecord) -> None:
        """Make this row hold `record`: the alarm as it stands after its latest change."""
        self.session_id = int(record.session_key)
        self.rule_id = record.rule_id
        self.kind = record.kind.value
        self.priority = record.priority.value
        self.state = record.state.value
        self.text = record.text
        self.value = record.value
        self.limit_value = record.limit
        self.condition_active = record.condition_active
        self.audio_paused = record.audio_paused
        self.raised_at = _moment(record.raised_at)
        self.acknowledged_at = _optional_moment(record.acknowledged_at)
        self.acknowledged_by = record.acknowledged_by
        self.cleared_at = _optional_moment(record.cleared_at)
        self.escalate_at = _optional_moment(record.escalate_at)
        self.protocol_version = record.protocol_version
        self.alarm_group = record.group
        self.vital = None if record.vital is None else record.vital.value
        self.worst_value = record.worst_value

    def record(self) -> AlarmRecord:
        """The engine's record of this alarm, as stored."""
        return AlarmRecord(
            alarm_id=self.id,
            session_key=str(self.session_id),
            rule_id=self.rule_id,
            kind=AlarmKind(self.kind),
            priority=Priority(self.priority),
            state=AlarmState(self.state),
            text=self.text,
            value=self.value,
            limit=self.limit_value,
            condition_active=self.condition_active,
            audio_paused=self.audio_paused,
            raised_at=self.raised_at.timestamp(),
            acknowledged_at=_optional_epoch(self.acknowledged_at),
            acknowledged_by=self.acknowledged_by,
            cleared_at=_optional_epoch(self.cleared_at),
            escalate_at=_optional_epoch(self.escalate_at),
            protocol_version=self.protocol_version,
            group=self.alarm_group,
            vital=None if self.vital is None else Vital(self.vital),
            worst_value=self.worst_value,
        )


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _optional_moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else _moment(epoch)


def _optional_epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class AlarmTransitionRecord(Base):
    """Every change to every alarm, with who acted when a person did."""

    __tablename__ = "alarm_transitions"
    __table_args__ = (
        Index("ix_alarm_transitions_alarm_id_at", "alarm_id", "at"),
        # One alarm has one change of a kind at one moment: a transition written again (the
        # alarm outbox retrying a commit whose answer was lost, or replaying its journal
        # after a restart) cannot become a second row.
        UniqueConstraint("alarm_id", "event", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alarm_id: Mapped[str] = mapped_column(ForeignKey("alarms.id"))
    rule_id: Mapped[str] = mapped_column(String(64))  # the tier shown after the change
    event: Mapped[str] = mapped_column(String(24))
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)
    limit_value: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(80))
    condition_active: Mapped[bool] = mapped_column(Boolean)
    audio_paused: Mapped[bool] = mapped_column(Boolean)


class LimitOverrideRecord(Base):
    """A change to one rule's limit for one session: who, why, from what, to what."""

    __tablename__ = "limit_overrides"
    __table_args__ = (Index("ix_limit_overrides_session_id_at", "session_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[float] = mapped_column(Float)
    new_value: Mapped[float] = mapped_column(Float)
    changed_by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    reverted: Mapped[bool] = mapped_column(Boolean)
    protocol_version: Mapped[str] = mapped_column(String(40))


class SessionBaseline(Base):
    """A session's baseline for one vital, as the alarm engine set it from baseline readings."""

    __tablename__ = "session_baselines"
    __table_args__ = (UniqueConstraint("session_id", "vital"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    vital: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- People, credentials and the audit trail (security) ---------------------------------


class Role(enum.StrEnum):
    """What a person may do; each role may do everything the roles before it may."""

    NURSE = "nurse"
    CLINICIAN = "clinician"
    ADMIN = "admin"


class TokenKind(enum.StrEnum):
    SESSION = "session"  # a browser sign-in, carried in the session cookie
    API = "api"  # a bearer token for scripts and integrations


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    role: Mapped[Role] = mapped_column(_str_enum(Role))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    all_sites: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    sites: Mapped[list[UserSite]] = relationship(cascade="all, delete-orphan")


class UserSite(Base):
    """A site a user may see (admins and `all_sites` users see every site)."""

    __tablename__ = "user_sites"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )


class AccessToken(Base):
    """A person's credential: a browser session or an API token. Only its hash is kept."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[TokenKind] = mapped_column(_str_enum(TokenKind))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceCredential(Base):
    """A device's or gateway's ingest credential: bound to one device, or to a whole site."""

    __tablename__ = "device_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(80))
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(80))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """One security-relevant act. Append-only: the database refuses updates and deletes."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(80))
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(48), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(128))
    site_id: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


# --- Session review: annotations after the fact (issue 8) ---------------------------------


class AnnotationKind(enum.StrEnum):
    NOTE = "note"  # a clinician's note on the session
    ALARM_MARK = "alarm_mark"  # an alarm marked actionable or not


class ReviewAnnotation(Base):
    """A note or an alarm mark added in review. Append-only: a changed mark is a new row,
    and the latest row for an alarm is the one that counts."""

    __tablename__ = "review_annotations"
    __table_args__ = (
        Index("ix_review_annotations_session_id_at", "session_id", "at"),
        Index("ix_review_annotations_alarm_id_at", "alarm_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    kind: Mapped[AnnotationKind] = mapped_column(_str_enum(AnnotationKind))
    alarm_id: Mapped[str | None] = mapped_column(ForeignKey("alarms.id"))
    actionable: Mapped[bool | None] = mapped_column(Boolean)
    text: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- Operations: audit retention (issue 19) ---------------------------------------------------


class AuditPrunePermit(Base):
    """The one way past the audit trail's append-only rule: while a row here says `cutoff`,
    audit events older than it may be deleted. `vigil audit prune` adds the row, deletes,
    removes the row and records the prune, in one transaction, so no other connection ever
    sees a permit."""

    __tablename__ = "audit_prune_permits"

    id: Mapped[int] = mapped_column(primary_key=True)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())


# --- Operations: single sign-on (issue 19) ----------------------------------------------------


class UserIdentity(Base):
    """A person's account at an OpenID Connect provider, linked to their Vigil user: the
    provider's issuer and its stable subject id, never the (changeable) username."""

    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_sign_in_at: Mapped[datetime] = mapped_column(UTCDateTime())

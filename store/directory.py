"""The identity directory in the catalog: users, groups and (nested) group memberships, as an
identity provider pushes them over SCIM (``app.directory``), and the lookups group expansion
(``auth.directory``) and the identity map make.

Tables: ``directory_users`` (SCIM id, ``userName`` unique without regard to case, ``externalId``,
``displayName``, ``active``, the whole SCIM resource as JSON, created / lastModified / version),
``directory_user_emails`` (lower-cased addresses, for lookups), ``directory_groups`` (id,
``displayName`` unique, ``externalId``), ``directory_members`` (group → user or group) and
``directory_state`` (one row: ``version``).

Invariants:

- Every change (create, replace, delete, a membership) bumps ``directory_state.version`` in the
  transaction that makes it, so another process sees that its cached expansions are stale by
  reading one integer (``version``).
- Deleting a user or a group deletes every membership naming it, in the same transaction: a
  removed group never keeps granting through a dangling edge.
- ``groups_of`` follows memberships upwards breadth-first with a visited set (cycle-safe) and
  stops at ``max_depth`` levels; it returns group display names, which are ACL group names.
- A group's ``displayName`` is unique (it is the group principal); ``userName`` is unique
  without regard to case (SCIM ``caseExact: false``). A clash raises ``DirectoryConflict``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Index, func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, delete, select

from core.errors import ConflictError, InvalidRequestError, NotFoundError
from store.catalog import Catalog, aware_utc, unavailable, utcnow

Attribute = Literal["userName", "externalId", "email"]
MemberType = Literal["User", "Group"]
DEFAULT_MAX_DEPTH = 10
# Largest IN (...) list sent in one statement: longer id lists are read in chunks (PostgreSQL and
# SQLite both cope badly with tens of thousands of bound parameters).
IN_CHUNK = 1000


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    items = list(ids)
    for start in range(0, len(items), IN_CHUNK):
        yield items[start:start + IN_CHUNK]


class DirectoryUserRow(SQLModel, table=True):
    __tablename__ = "directory_users"
    __table_args__ = (Index("ix_directory_users_user_name_key", "user_name_key", unique=True),
                      Index("ix_directory_users_external_id", "external_id"))

    id: str = Field(primary_key=True)
    user_name: str
    user_name_key: str  # lower-cased userName
    external_id: str | None = None
    display_name: str | None = None
    active: bool = True
    resource: str = "{}"  # the SCIM resource (JSON), less id, meta, groups and password
    created_at: datetime
    modified_at: datetime
    version: int = 1


class DirectoryUserEmailRow(SQLModel, table=True):
    __tablename__ = "directory_user_emails"
    __table_args__ = (Index("ix_directory_user_emails_email", "email"),)

    user_id: str = Field(primary_key=True)
    email: str = Field(primary_key=True)  # lower-cased


class DirectoryGroupRow(SQLModel, table=True):
    __tablename__ = "directory_groups"
    __table_args__ = (Index("ix_directory_groups_display_name", "display_name", unique=True),
                      Index("ix_directory_groups_external_id", "external_id"))

    id: str = Field(primary_key=True)
    display_name: str
    external_id: str | None = None
    resource: str = "{}"  # the SCIM resource (JSON), less id, meta and members
    created_at: datetime
    modified_at: datetime
    version: int = 1


class DirectoryMemberRow(SQLModel, table=True):
    __tablename__ = "directory_members"
    __table_args__ = (Index("ix_directory_members_member", "member_id"),)

    group_id: str = Field(primary_key=True)
    member_id: str = Field(primary_key=True)
    member_type: str  # "User" | "Group"
    display: str | None = None  # as the client sent it (None: the member's own name is shown)


class DirectoryStateRow(SQLModel, table=True):
    __tablename__ = "directory_state"

    id: int = Field(primary_key=True)  # always 1
    version: int = 0


class DirectoryConflict(ConflictError):
    """A unique value (userName, group displayName) is taken, or a version precondition failed."""

    code = "directory_conflict"


@dataclass(frozen=True)
class DirectoryUser:
    id: str
    user_name: str
    external_id: str | None
    display_name: str | None
    active: bool
    emails: tuple[str, ...]
    resource: dict[str, Any]
    created: datetime
    modified: datetime
    version: int


@dataclass(frozen=True)
class Member:
    id: str
    type: MemberType
    display: str | None = None


@dataclass(frozen=True)
class DirectoryGroup:
    id: str
    display_name: str
    external_id: str | None
    members: tuple[Member, ...]
    resource: dict[str, Any]
    created: datetime
    modified: datetime
    version: int


@dataclass(frozen=True)
class UserData:
    """What a write of a user sets (the store fills id and meta)."""

    user_name: str
    external_id: str | None = None
    display_name: str | None = None
    active: bool = True
    emails: tuple[str, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupData:
    display_name: str
    external_id: str | None = None
    members: tuple[str, ...] = ()  # ids of users or groups
    displays: dict[str, str] = field(default_factory=dict)  # member id -> display sent by the client
    resource: dict[str, Any] = field(default_factory=dict)


class DirectoryStore:
    """Reads and writes of the directory tables. ``journal`` rows passed to a write (its write
    audit events) are inserted in the same transaction as the change."""

    def __init__(self, catalog: Catalog | Engine) -> None:
        self.engine: Engine = catalog.engine if isinstance(catalog, Catalog) else catalog

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A session; a unique value already taken is ``DirectoryConflict``, any other database
        error ``BackendUnavailableError`` (503)."""
        with unavailable("directory"):
            try:
                with Session(self.engine, expire_on_commit=False) as s:
                    yield s
            except IntegrityError:
                raise DirectoryConflict("a unique value (userName, group displayName) is already taken") from None

    # -- version ----------------------------------------------------------------------------
    def version(self) -> int:
        """The directory's change counter (0 before the first change)."""
        with self._session() as s:
            row = s.get(DirectoryStateRow, 1)
            return row.version if row is not None else 0

    @staticmethod
    def _bump(s: Session) -> None:
        done = s.execute(update(DirectoryStateRow).where(col(DirectoryStateRow.id) == 1)
                         .values(version=col(DirectoryStateRow.version) + 1))
        if not getattr(done, "rowcount", 0):
            s.add(DirectoryStateRow(id=1, version=1))

    def _commit(self, s: Session, journal: Iterable[SQLModel], what: str) -> None:
        self._bump(s)
        for row in journal:
            s.add(row)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            raise DirectoryConflict(f"{what} is already taken") from None

    # -- users ------------------------------------------------------------------------------
    def get_user(self, user_id: str) -> DirectoryUser | None:
        with self._session() as s:
            row = s.get(DirectoryUserRow, user_id)
            return self._user(s, row) if row is not None else None

    def find_user(self, attribute: Attribute, value: str) -> DirectoryUser | None:
        """The user whose ``attribute`` is ``value`` (userName and email without regard to case;
        externalId exactly); None when there is none or, for email, when several share it."""
        if not value:
            return None
        with self._session() as s:
            if attribute == "userName":
                row = s.exec(select(DirectoryUserRow).where(DirectoryUserRow.user_name_key == value.lower())).first()
            elif attribute == "externalId":
                rows = list(s.exec(select(DirectoryUserRow).where(DirectoryUserRow.external_id == value).limit(2)).all())
                row = rows[0] if len(rows) == 1 else None
            elif attribute == "email":
                ids = list(s.exec(select(DirectoryUserEmailRow.user_id)
                                  .where(DirectoryUserEmailRow.email == value.lower()).limit(2)).all())
                row = s.get(DirectoryUserRow, ids[0]) if len(ids) == 1 else None
            else:
                raise ValueError(f"unknown directory attribute {attribute!r}")
            return self._user(s, row) if row is not None else None

    def users(self, ids: Sequence[str] | None = None, *, user_name: str | None = None, external_id: str | None = None,
              offset: int = 0, limit: int | None = None) -> list[DirectoryUser]:
        """Users in creation order, narrowed by ids / exact userName (any case) / externalId."""
        with self._session() as s:
            q = select(DirectoryUserRow)
            if ids is not None:
                if len(ids) > IN_CHUNK:
                    raise ValueError(f"at most {IN_CHUNK} ids per users() call")
                q = q.where(col(DirectoryUserRow.id).in_(list(ids)))
            if user_name is not None:
                q = q.where(DirectoryUserRow.user_name_key == user_name.lower())
            if external_id is not None:
                q = q.where(DirectoryUserRow.external_id == external_id)
            q = q.order_by(col(DirectoryUserRow.created_at), col(DirectoryUserRow.id)).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            rows = list(s.exec(q).all())
            return self._users(s, rows)

    def count_users(self) -> int:
        with self._session() as s:
            return int(s.exec(select(func.count()).select_from(DirectoryUserRow)).one())

    def create_user(self, data: UserData, journal: Iterable[SQLModel] = (), user_id: str | None = None) -> DirectoryUser:
        now = utcnow()
        uid = user_id or str(uuid.uuid4())
        with self._session() as s:
            s.add(DirectoryUserRow(id=uid, user_name=data.user_name, user_name_key=data.user_name.lower(),
                                   external_id=data.external_id, display_name=data.display_name, active=data.active,
                                   resource=json.dumps(data.resource), created_at=now, modified_at=now, version=1))
            s.add_all(DirectoryUserEmailRow(user_id=uid, email=e) for e in _emails(data.emails))
            self._commit(s, journal, f"userName {data.user_name!r}")
        user = self.get_user(uid)
        assert user is not None
        return user

    def replace_user(self, user_id: str, data: UserData, *, expected_version: int | None = None,
                     journal: Iterable[SQLModel] = ()) -> DirectoryUser:
        with self._session() as s:
            self._claim(s, DirectoryUserRow, user_id, expected_version, dict(
                user_name=data.user_name, user_name_key=data.user_name.lower(), external_id=data.external_id,
                display_name=data.display_name, active=data.active, resource=json.dumps(data.resource)))
            s.exec(delete(DirectoryUserEmailRow).where(col(DirectoryUserEmailRow.user_id) == user_id))
            s.add_all(DirectoryUserEmailRow(user_id=user_id, email=e) for e in _emails(data.emails))
            self._commit(s, journal, f"userName {data.user_name!r}")
        user = self.get_user(user_id)
        assert user is not None
        return user

    def delete_user(self, user_id: str, *, expected_version: int | None = None, journal: Iterable[SQLModel] = ()) -> None:
        with self._session() as s:
            self._claim(s, DirectoryUserRow, user_id, expected_version, None)
            s.exec(delete(DirectoryUserEmailRow).where(col(DirectoryUserEmailRow.user_id) == user_id))
            s.exec(delete(DirectoryMemberRow).where(col(DirectoryMemberRow.member_id) == user_id))
            self._commit(s, journal, "user")

    # -- groups -----------------------------------------------------------------------------
    def get_group(self, group_id: str) -> DirectoryGroup | None:
        with self._session() as s:
            row = s.get(DirectoryGroupRow, group_id)
            return self._groups(s, [row])[0] if row is not None else None

    def groups(self, ids: Sequence[str] | None = None, *, display_name: str | None = None,
               display_name_ci: str | None = None, external_id: str | None = None, offset: int = 0,
               limit: int | None = None, with_members: bool = True) -> list[DirectoryGroup]:
        """Groups in creation order, narrowed by ids / displayName (exactly, or without regard to
        case) / externalId; without ``with_members`` their members are not read (left empty)."""
        with self._session() as s:
            q = select(DirectoryGroupRow)
            if ids is not None:
                if len(ids) > IN_CHUNK:
                    raise ValueError(f"at most {IN_CHUNK} ids per groups() call")
                q = q.where(col(DirectoryGroupRow.id).in_(list(ids)))
            if display_name is not None:
                q = q.where(DirectoryGroupRow.display_name == display_name)
            if display_name_ci is not None:
                q = q.where(func.lower(col(DirectoryGroupRow.display_name)) == display_name_ci.lower())
            if external_id is not None:
                q = q.where(DirectoryGroupRow.external_id == external_id)
            q = q.order_by(col(DirectoryGroupRow.created_at), col(DirectoryGroupRow.id)).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return self._groups(s, list(s.exec(q).all()), with_members=with_members)

    def count_groups(self) -> int:
        with self._session() as s:
            return int(s.exec(select(func.count()).select_from(DirectoryGroupRow)).one())

    def create_group(self, data: GroupData, journal: Iterable[SQLModel] = (), group_id: str | None = None) -> DirectoryGroup:
        now = utcnow()
        gid = group_id or str(uuid.uuid4())
        with self._session() as s:
            members = self._members(s, gid, data.members, data.displays)
            s.add(DirectoryGroupRow(id=gid, display_name=data.display_name, external_id=data.external_id,
                                    resource=json.dumps(data.resource), created_at=now, modified_at=now, version=1))
            s.add_all(members)
            self._commit(s, journal, f"group displayName {data.display_name!r}")
        group = self.get_group(gid)
        assert group is not None
        return group

    def replace_group(self, group_id: str, data: GroupData, *, expected_version: int | None = None,
                      journal: Iterable[SQLModel] = ()) -> DirectoryGroup:
        with self._session() as s:
            self._claim(s, DirectoryGroupRow, group_id, expected_version, dict(
                display_name=data.display_name, external_id=data.external_id, resource=json.dumps(data.resource)))
            members = self._members(s, group_id, data.members, data.displays)
            s.exec(delete(DirectoryMemberRow).where(col(DirectoryMemberRow.group_id) == group_id))
            s.add_all(members)
            self._commit(s, journal, f"group displayName {data.display_name!r}")
        group = self.get_group(group_id)
        assert group is not None
        return group

    def delete_group(self, group_id: str, *, expected_version: int | None = None, journal: Iterable[SQLModel] = ()) -> None:
        with self._session() as s:
            self._claim(s, DirectoryGroupRow, group_id, expected_version, None)
            s.exec(delete(DirectoryMemberRow).where(col(DirectoryMemberRow.group_id) == group_id))
            s.exec(delete(DirectoryMemberRow).where(col(DirectoryMemberRow.member_id) == group_id))
            self._commit(s, journal, "group")

    # -- expansion --------------------------------------------------------------------------
    def groups_of(self, user_id: str, transitive: bool = True, max_depth: int = DEFAULT_MAX_DEPTH) -> set[str]:
        """Display names of the groups ``user_id`` (a user or a group) is a member of; with
        ``transitive``, also the groups those are members of, up to ``max_depth`` levels."""
        with self._session() as s:
            ids = self._ancestors(s, {user_id}, 1 if not transitive else max_depth)
            return self._names(s, ids)

    def ancestors_of(self, display_names: Iterable[str], max_depth: int = DEFAULT_MAX_DEPTH) -> set[str]:
        """Display names of every group that contains (transitively, up to ``max_depth``
        levels) one of the named groups; the named groups themselves are not included."""
        names = sorted(set(display_names))
        if not names:
            return set()
        with self._session() as s:
            start = set(s.exec(select(DirectoryGroupRow.id).where(col(DirectoryGroupRow.display_name).in_(names))).all())
            if not start:
                return set()
            return self._names(s, self._ancestors(s, start, max_depth) - start)

    @staticmethod
    def _ancestors(s: Session, start: set[str], max_depth: int) -> set[str]:
        seen: set[str] = set()
        frontier = set(start)
        for _ in range(max_depth):
            if not frontier:
                break
            parents: set[str] = set()
            for part in _chunks(sorted(frontier)):
                parents |= set(s.exec(select(DirectoryMemberRow.group_id).where(col(DirectoryMemberRow.member_id).in_(part))).all())
            frontier = parents - seen - start
            seen |= parents
        return seen

    @staticmethod
    def _names(s: Session, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        out: set[str] = set()
        for part in _chunks(sorted(ids)):
            out |= set(s.exec(select(DirectoryGroupRow.display_name).where(col(DirectoryGroupRow.id).in_(part))).all())
        return out

    def direct_groups(self, member_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Per member id, the (group id, display name) of the groups it is directly in."""
        if not member_ids:
            return {}
        with self._session() as s:
            rows = [r for part in _chunks(dict.fromkeys(member_ids)) for r in s.exec(
                select(DirectoryMemberRow.member_id, DirectoryGroupRow.id, DirectoryGroupRow.display_name)
                .join(DirectoryGroupRow, col(DirectoryGroupRow.id) == col(DirectoryMemberRow.group_id))
                .where(col(DirectoryMemberRow.member_id).in_(part))
                .order_by(col(DirectoryGroupRow.display_name))).all()]
        out: dict[str, list[tuple[str, str]]] = {}
        for member_id, gid, name in rows:
            out.setdefault(member_id, []).append((gid, name))
        return out

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _claim(s: Session, model: type[Any], key: str, expected_version: int | None,
               values: dict[str, Any] | None) -> None:
        """Update (``values``) or delete (None) the row ``key`` only if its version is still
        ``expected_version`` (without one: the version read here), in one conditional statement:
        the check and the write are atomic on SQLite and PostgreSQL alike, and the row stays
        locked until the transaction ends. A row changed meanwhile is ``DirectoryConflict``
        (``precondition_failed``): two read-modify-writes of one group never both succeed, so a
        membership removal is never overwritten by a concurrent PATCH that read it before."""
        table = model.__table__
        version = expected_version
        if version is None:
            version = s.exec(select(col(model.version)).where(col(model.id) == key)).first()
            if version is None:
                raise NotFoundError(f"{'user' if model is DirectoryUserRow else 'group'} {key!r} not found")
        where = (table.c.id == key) & (table.c.version == version)
        if values is None:
            done = s.execute(table.delete().where(where))
        else:
            done = s.execute(table.update().where(where).values(**values, modified_at=utcnow(), version=version + 1))
        if getattr(done, "rowcount", 0) == 1:
            return
        s.rollback()
        if s.exec(select(col(model.id)).where(col(model.id) == key)).first() is None:
            raise NotFoundError(f"{'user' if model is DirectoryUserRow else 'group'} {key!r} not found")
        raise DirectoryConflict("the resource changed since it was read", code="precondition_failed")

    @staticmethod
    def _members(s: Session, group_id: str, member_ids: Iterable[str],
                 displays: dict[str, str] | None = None) -> list[DirectoryMemberRow]:
        """Membership rows for ``member_ids``; an id that is neither a user nor a group, or the
        group itself, is an error (a dangling member would be resolved later by chance)."""
        ids = sorted(set(member_ids))
        if not ids:
            return []
        users: set[str] = set()
        groups: set[str] = set()
        for part in _chunks(ids):
            users |= set(s.exec(select(DirectoryUserRow.id).where(col(DirectoryUserRow.id).in_(part))).all())
            groups |= set(s.exec(select(DirectoryGroupRow.id).where(col(DirectoryGroupRow.id).in_(part))).all())
        unknown = [i for i in ids if i not in users and i not in groups]
        if unknown:
            raise UnknownMemberError(f"members name no user or group: {unknown[:5]}")
        if group_id in ids:
            raise UnknownMemberError("a group cannot be a member of itself")
        return [DirectoryMemberRow(group_id=group_id, member_id=i, member_type="User" if i in users else "Group",
                                   display=(displays or {}).get(i)) for i in ids]

    def _user(self, s: Session, row: DirectoryUserRow) -> DirectoryUser:
        return self._users(s, [row])[0]

    @staticmethod
    def _users(s: Session, rows: list[DirectoryUserRow]) -> list[DirectoryUser]:
        emails: dict[str, list[str]] = {}
        if rows:
            for part in _chunks(r.id for r in rows):
                for uid, email in s.exec(select(DirectoryUserEmailRow.user_id, DirectoryUserEmailRow.email)
                                         .where(col(DirectoryUserEmailRow.user_id).in_(part))).all():
                    emails.setdefault(uid, []).append(email)
        return [DirectoryUser(id=r.id, user_name=r.user_name, external_id=r.external_id, display_name=r.display_name,
                              active=r.active, emails=tuple(sorted(emails.get(r.id, []))), resource=json.loads(r.resource),
                              created=aware_utc(r.created_at) or r.created_at, modified=aware_utc(r.modified_at) or r.modified_at,
                              version=r.version) for r in rows]

    @staticmethod
    def _groups(s: Session, rows: list[DirectoryGroupRow], with_members: bool = True) -> list[DirectoryGroup]:
        members: dict[str, list[Member]] = {}
        if rows and with_members:
            mrows = [m for part in _chunks(r.id for r in rows)
                     for m in s.exec(select(DirectoryMemberRow).where(col(DirectoryMemberRow.group_id).in_(part))
                                     .order_by(col(DirectoryMemberRow.member_id))).all()]
            uids = [m.member_id for m in mrows if m.member_type == "User"]
            gids = [m.member_id for m in mrows if m.member_type == "Group"]
            names: dict[str, str | None] = {}
            for part in _chunks(uids):
                for uid, dn, un in s.exec(select(DirectoryUserRow.id, DirectoryUserRow.display_name,
                                                 DirectoryUserRow.user_name).where(col(DirectoryUserRow.id).in_(part))).all():
                    names[uid] = dn or un
            for part in _chunks(gids):
                for gid, dn in s.exec(select(DirectoryGroupRow.id, DirectoryGroupRow.display_name)
                                      .where(col(DirectoryGroupRow.id).in_(part))).all():
                    names[gid] = dn
            for m in mrows:
                kind: MemberType = "User" if m.member_type == "User" else "Group"
                members.setdefault(m.group_id, []).append(Member(m.member_id, kind, m.display or names.get(m.member_id)))
        return [DirectoryGroup(id=r.id, display_name=r.display_name, external_id=r.external_id,
                               members=tuple(members.get(r.id, [])), resource=json.loads(r.resource),
                               created=aware_utc(r.created_at) or r.created_at,
                               modified=aware_utc(r.modified_at) or r.modified_at, version=r.version) for r in rows]


class UnknownMemberError(InvalidRequestError):
    """A membership naming something that is not in the directory (or a group naming itself)."""

    code = "unknown_member"


def _emails(values: Iterable[str]) -> list[str]:
    return sorted({v.strip().lower() for v in values if v and v.strip()})

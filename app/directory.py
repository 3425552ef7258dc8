"""SCIM 2.0 service provider over the directory (``store.directory``), built on scim2-server.

``ScimEndpoint.handle`` serves one framework-free ``ScimRequest``: it checks the SCIM bearer
credential, lets scim2-server's ``ScimHandler`` validate the request, apply PUT and PATCH
(members add/remove/replace, ``active``), evaluate filters, conditional headers and paging,
and calls ``DirectoryScimStorage`` for every read and write. ``api.routes.scim`` is the route.

Invariants:

- Only the SCIM credential (``directory.scim_token`` or its SHA-256 in
  ``directory.scim_token_sha256``) is accepted, compared in constant time on its SHA-256;
  OIDC tokens never reach this endpoint's data. ``/ServiceProviderConfig`` needs none
  (RFC 7643 §5). Without a configured credential the endpoint does not exist (404).
- Every write that changes the directory stores its write-audit event (actor ``scim``) in
  the transaction that changes it (``store.directory`` journal); a refused write (bad
  credential, uniqueness, unknown member, precondition) stores a ``refused`` event.
- Filtering: an ``eq`` on userName / externalId / displayName / id in a top-level ``and``
  narrows the rows read in SQL; the full filter is then always evaluated by scim2-models on
  the whole resource, so the answer never depends on which narrowing applied.
- A group display name must be a valid group principal (``core.types.principal_problem``);
  members must name existing users or groups.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Union, cast

from scim2_models import (
    AuthenticationScheme,
    External,
    InvalidValueException,
    Meta,
    NotFoundException,
    NotImplementedException,
    PreconditionFailedException,
    Reference,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    TooManyException,
    UnauthorizedException,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison, LogicalExpr, LogicalOperator
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import ScimService
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import load_default_resource_types, load_default_schemas, parametrize

from core.errors import BackendUnavailableError, NotFoundError
from core.logging import Log
from core.settings import Settings
from core.types import principal_problem
from store.audit import WriteActor, WriteAudit
from store.catalog import WriteEventRow, utcnow
from store.directory import (
    DirectoryConflict,
    DirectoryGroup,
    DirectoryStore,
    DirectoryUser,
    GroupData,
    UnknownMemberError,
    UserData,
)

log = Log("clearance.scim")
SCIM_ACTOR_ISSUER = "scim"
AUDIT_SOURCE = "directory"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# A write without If-Match that lost a race with another write is done again, at most this often.
RETRIED = {Operation.patch, Operation.replace, Operation.delete}
WRITE_ATTEMPTS = 5
BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken, name="OAuth Bearer Token", primary=True,
    description="The SCIM credential configured in directory.scim_token / directory.scim_token_sha256",
    spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
)


class ScimUnavailable(SCIMException):
    """The catalog cannot be read or written: 503, the client retries."""

    status = 503
    _default_detail = "The directory is unavailable"


def build_provider(max_results: int) -> ScimProvider:
    """Users (with the enterprise extension) and Groups of RFC 7643; PATCH, filter, sort and
    ETags supported; no bulk, no password change."""
    config = ServiceProviderConfig.model_validate({
        "documentationUri": "https://github.com/clearance/clearance/blob/main/docs/scim.md",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
    })
    config.authentication_schemes = [BEARER]
    return ScimProvider.from_discovery(load_default_schemas().values(), load_default_resource_types().values(),
                                       config=config)


@dataclass(frozen=True)
class CallInfo:
    request_id: str
    actor: WriteActor


_CALL: ContextVar[CallInfo | None] = ContextVar("clearance_scim_call", default=None)


def _version_of(etag: str | None) -> int | None:
    if not etag:
        return None
    digits = etag.removeprefix("W/").strip('"')
    try:
        return int(digits)
    except ValueError:
        raise PreconditionFailedException from None


def _etag(version: int) -> str:
    return f'W/"{version}"'


@contextmanager
def _scim_errors() -> Iterator[None]:
    """Directory errors as SCIM errors (404, 409 uniqueness, 412, 400 invalidValue, 503)."""
    try:
        yield
    except NotFoundError as exc:
        raise NotFoundException(detail=exc.message) from None
    except UnknownMemberError as exc:
        raise InvalidValueException(detail=exc.message) from None
    except DirectoryConflict as exc:
        if exc.code == "precondition_failed":
            raise PreconditionFailedException(detail=exc.message) from None
        raise UniquenessException(detail=exc.message) from None
    except BackendUnavailableError as exc:
        raise ScimUnavailable(detail=exc.message) from None


class DirectoryScimStorage(ScimStorage):
    """scim2-server's storage seam over ``DirectoryStore`` (Users and Groups)."""

    supports_cursors = False

    def __init__(self, store: DirectoryStore, provider: ScimProvider, tenant: str, max_results: int = 1000) -> None:
        self.store = store
        self.max_results = max_results
        self.provider = provider
        self.tenant = tenant
        self.user_type = next(rt for rt in provider.resource_types if rt.id == "User")
        self.group_type = next(rt for rt in provider.resource_types if rt.id == "Group")
        self.user_model = cast(type[Resource[Any]], provider.model_for(self.user_type))
        self.group_model = cast(type[Resource[Any]], provider.model_for(self.group_type))

    # -- conversions --------------------------------------------------------------------------
    def _is_user(self, rt: ResourceType) -> bool:
        if rt.id == "User":
            return True
        if rt.id == "Group":
            return False
        raise NotFoundException(detail=f"no resource type {rt.id!r}")

    def user_resource(self, u: DirectoryUser, groups: list[tuple[str, str]]) -> Resource[Any]:
        data = dict(u.resource)
        data["id"] = u.id
        if groups:
            data["groups"] = [{"value": gid, "display": name, "type": "direct", "$ref": f"Groups/{gid}"} for gid, name in groups]
        res = self.user_model.model_validate(data)
        res.meta = Meta(resource_type="User", created=u.created, last_modified=u.modified, version=_etag(u.version))
        return res

    def group_resource(self, g: DirectoryGroup) -> Resource[Any]:
        data = dict(g.resource)
        data["id"] = g.id
        if g.members:
            data["members"] = [{"value": m.id, "type": m.type, "display": m.display,
                                "$ref": f"{'Users' if m.type == 'User' else 'Groups'}/{m.id}"} for m in g.members]
        res = self.group_model.model_validate(data)
        res.meta = Meta(resource_type="Group", created=g.created, last_modified=g.modified, version=_etag(g.version))
        return res

    @staticmethod
    def _stored_json(resource: Resource[Any], drop: tuple[str, ...]) -> dict[str, Any]:
        data = resource.model_dump(mode="json")
        for key in ("id", "meta", "password", *drop):
            data.pop(key, None)
        return cast(dict[str, Any], json.loads(json.dumps(data)))

    def user_data(self, resource: Resource[Any]) -> UserData:
        r = cast(Any, resource)
        if not r.user_name or not str(r.user_name).strip():
            raise InvalidValueException(detail="userName is required")
        emails = tuple(e.value for e in (r.emails or []) if getattr(e, "value", None))
        return UserData(user_name=str(r.user_name), external_id=r.external_id, display_name=r.display_name,
                        active=r.active is not False, emails=emails, resource=self._stored_json(resource, ("groups",)))

    def group_data(self, resource: Resource[Any]) -> GroupData:
        r = cast(Any, resource)
        name = r.display_name
        if not name or principal_problem(f"group:{name}") is not None:
            raise InvalidValueException(detail=f"displayName must be a valid group name: {principal_problem(f'group:{name}')}")
        members = tuple(m.value for m in (r.members or []) if getattr(m, "value", None))
        displays = {m.value: m.display for m in (r.members or []) if getattr(m, "value", None) and m.display}
        return GroupData(display_name=str(name), external_id=r.external_id, members=members, displays=displays,
                         resource=self._stored_json(resource, ("members",)))

    # -- audit --------------------------------------------------------------------------------
    def _event(self, action: str, outcome: str, resource_id: str, detail: dict[str, Any]) -> list[WriteEventRow]:
        call = _CALL.get()
        actor = call.actor if call else WriteActor(SCIM_ACTOR_ISSUER, "scim-client", "", self.tenant)
        return [WriteEventRow(at=utcnow(), request_id=call.request_id if call else "", tenant=self.tenant,
                              issuer=actor.issuer, subject=actor.subject, principals_hash=actor.principals_hash,
                              action=action, outcome=outcome, status=200, source=AUDIT_SOURCE, doc_id=resource_id,
                              detail=json.dumps(detail, sort_keys=True, default=str))]

    # -- ScimStorage --------------------------------------------------------------------------
    def get(self, resource_type: ResourceType, resource_id: str, *,
            response_parameters: ResponseParameters[Any] | None = None) -> Resource[Any]:
        with _scim_errors():
            if self._is_user(resource_type):
                u = self.store.get_user(resource_id)
                if u is None:
                    raise NotFoundException(detail=f"User {resource_id!r} not found")
                return self.user_resource(u, self.store.direct_groups([u.id]).get(u.id, []))
            g = self.store.get_group(resource_id)
            if g is None:
                raise NotFoundException(detail=f"Group {resource_id!r} not found")
            return self.group_resource(g)

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        with _scim_errors():
            if self._is_user(resource_type):
                data = self.user_data(resource)
                uid = _new_id()
                u = self.store.create_user(data, self._event("scim_user_create", "added", uid, {
                    "userName": data.user_name, "active": data.active}), user_id=uid)
                return self.user_resource(u, [])
            gdata = self.group_data(resource)
            gid = _new_id()
            g = self.store.create_group(gdata, self._event("scim_group_create", "added", gid, {
                "displayName": gdata.display_name, "members_added": sorted(gdata.members)}), group_id=gid)
            return self.group_resource(g)

    def update(self, resource_type: ResourceType, resource: Resource[Any], *,
               expected_version: str | None = None) -> Resource[Any]:
        rid = cast(str, resource.id)
        version = _version_of(expected_version)
        with _scim_errors():
            if self._is_user(resource_type):
                data = self.user_data(resource)
                before = self.store.get_user(rid)
                detail: dict[str, Any] = {"userName": data.user_name, "active": data.active}
                if before is not None and before.active != data.active:
                    detail["active_before"] = before.active
                u = self.store.replace_user(rid, data, expected_version=version,
                                            journal=self._event("scim_user_replace", "updated", rid, detail))
                return self.user_resource(u, self.store.direct_groups([rid]).get(rid, []))
            gdata = self.group_data(resource)
            gbefore = self.store.get_group(rid)
            old = {m.id for m in gbefore.members} if gbefore is not None else set()
            new = set(gdata.members)
            g = self.store.replace_group(rid, gdata, expected_version=version, journal=self._event(
                "scim_group_replace", "updated", rid, {"displayName": gdata.display_name,
                                                       "members_added": sorted(new - old),
                                                       "members_removed": sorted(old - new)}))
            return self.group_resource(g)

    def delete(self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None) -> None:
        version = _version_of(expected_version)
        with _scim_errors():
            if self._is_user(resource_type):
                self.store.delete_user(resource_id, expected_version=version,
                                       journal=self._event("scim_user_delete", "deleted", resource_id, {}))
            else:
                self.store.delete_group(resource_id, expected_version=version,
                                        journal=self._event("scim_group_delete", "deleted", resource_id, {}))

    def search(self, resource_types: list[ResourceType], search_request: SearchRequest[Any], *,
               position: Any = None) -> SearchPage:
        if search_request.cursor is not None:
            raise NotImplementedException(detail="cursor pagination is not supported")
        with _scim_errors():
            start = search_request.start_index_0 or 0
            count = search_request.count
            if search_request.filter is None and search_request.sort_by is None and len(resource_types) == 1:
                return self._sql_page(resource_types[0], start, count)
            found: list[Resource[Any]] = []
            members = _members_needed(search_request)
            for rt in resource_types:
                found += self._candidates(rt, search_request.filter, members)
            scim_filter = search_request.filter
            if scim_filter is not None and not scim_filter.models and found:
                models = tuple(dict.fromkeys(type(r) for r in found))
                scim_filter = parametrize(ScimFilter, Union[models])(str(scim_filter))  # noqa: UP007
            if scim_filter is not None:
                found = [r for r in found if scim_filter.match(r)]
            if search_request.sort_by is not None:
                found = list(search_request.sort(found))  # RFC 7644 §3.4.2.3 order, as scim2-models defines it
            stop = None if count is None else start + count
            return SearchPage(len(found), found[start:stop])

    def _sql_page(self, rt: ResourceType, start: int, count: int | None) -> SearchPage:
        count = self.max_results if count is None else min(count, self.max_results)  # a page is bounded
        if self._is_user(rt):
            users = self.store.users(offset=start, limit=count) if count != 0 else []
            groups = self.store.direct_groups([u.id for u in users])
            return SearchPage(self.store.count_users(), [self.user_resource(u, groups.get(u.id, [])) for u in users])
        page = self.store.groups(offset=start, limit=count) if count != 0 else []
        return SearchPage(self.store.count_groups(), [self.group_resource(g) for g in page])

    def _candidates(self, rt: ResourceType, scim_filter: ScimFilter[Any] | None, members: bool = True) -> list[Resource[Any]]:
        """The resources of ``rt`` the filter may match: narrowed in SQL by one ``eq`` of the
        top-level ``and`` on an indexed attribute, else all of them (the filter decides) — but
        never more than ``max_results``: a larger candidate set is SCIM ``tooMany`` (400), so
        one search cannot load the whole directory into memory. Group members are read only
        when the filter or the answer needs them."""
        narrow = _narrowing(scim_filter) if scim_filter is not None else None
        attr, value = narrow if narrow is not None else ("", "")
        if narrow is None:
            total = self.store.count_users() if self._is_user(rt) else self.store.count_groups()
            if total > self.max_results:
                raise TooManyException(detail=f"the filter would be evaluated over {total} {rt.id} resources, more "
                                              f"than maxResults {self.max_results}; narrow it with an eq on id, "
                                              "userName, externalId or displayName")
        if self._is_user(rt):
            kwargs: dict[str, Any] = {}
            if attr == "id":
                kwargs["ids"] = [value]
            elif attr == "username":
                kwargs["user_name"] = value
            elif attr == "externalid":
                kwargs["external_id"] = value
            users = self.store.users(**kwargs)
            groups = self.store.direct_groups([u.id for u in users])
            return [self.user_resource(u, groups.get(u.id, [])) for u in users]
        gkw: dict[str, Any] = {}
        if attr == "id":
            gkw["ids"] = [value]
        elif attr == "displayname":
            gkw["display_name_ci"] = value
        elif attr == "externalid":
            gkw["external_id"] = value
        return [self.group_resource(g) for g in self.store.groups(**gkw, with_members=members)]


def _narrowing(scim_filter: ScimFilter[Any]) -> tuple[str, str] | None:
    """An ``attr eq "string"`` (attr: id, userName, externalId, displayName; no sub-attribute,
    core schema) that the whole filter implies, or None."""
    try:
        node = scim_filter.ast
    except Exception:  # an unparsable filter is refused by scim2-models itself
        return None
    terms = node.terms if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_ else (node,)
    for t in terms:
        if (isinstance(t, Comparison) and t.op == CompareOperator.eq and isinstance(t.value, str)
                and t.attr_path.sub_attr is None and (t.attr_path.uri is None or ":core:" in t.attr_path.uri)
                and t.attr_path.attr.lower() in ("id", "username", "externalid", "displayname")):
            return t.attr_path.attr.lower(), t.value
    return None


def _members_needed(search: SearchRequest[Any]) -> bool:
    """Whether a search must read group members: its filter or sort names them, or the answer
    includes them (not left out by ``excludedAttributes`` / ``attributes``)."""
    named = " ".join(str(x) for x in (search.filter, search.sort_by) if x is not None).lower()
    if "members" in named:
        return True

    def short(a: Any) -> str:
        return str(a).rsplit(":", 1)[-1].split(".", 1)[0].lower()

    if search.attributes:
        return any(short(a) == "members" for a in search.attributes)
    if search.excluded_attributes:
        return not any(short(a) == "members" for a in search.excluded_attributes)
    return True


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


class ScimEndpoint:
    """The SCIM service provider: credential check, scim2-server's handler, write audit."""

    def __init__(self, settings: Settings, store: DirectoryStore, write_audit: WriteAudit) -> None:
        d = settings.directory
        if not d.scim_enabled:
            raise ValueError("SCIM needs directory.scim_token or directory.scim_token_sha256")
        digest = d.scim_token_sha256.lower() if d.scim_token_sha256 else hashlib.sha256(
            cast(Any, d.scim_token).get_secret_value().encode()).hexdigest()
        self._digest = bytes.fromhex(digest)
        self.tenant = settings.ingest.tenant
        self.provider = build_provider(d.max_results)
        self.service = ScimService(self.provider)
        self.storage = DirectoryScimStorage(store, self.provider, self.tenant, d.max_results)
        self.handler = ScimHandler(self.service, self.storage)
        self.write_audit = write_audit
        self.actor = WriteActor(issuer=SCIM_ACTOR_ISSUER, subject="scim-client", principals_hash="", tenant=self.tenant)

    def authenticated(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        ok = hmac.compare_digest(presented, self._digest)  # constant time, on digests of equal length
        return scheme.lower() == "bearer" and bool(token) and ok

    def handle(self, request: ScimRequest, request_id: str = "") -> ScimResponse:
        """Serve one SCIM request; never raises (errors are SCIM error responses)."""
        token = _CALL.set(CallInfo(request_id, self.actor))
        try:
            response = self._serve(request)
        finally:
            _CALL.reset(token)
        if request.method.upper() in WRITES and response.status >= 400:
            self._record_refusal(request, response, request_id)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response

    def _serve(self, request: ScimRequest) -> ScimResponse:
        try:
            with self.provider:
                operation = self.service.match(request).operation
            if operation is not Operation.service_provider_config and not self.authenticated(request.header("Authorization")):
                raise UnauthorizedException(detail="a valid SCIM bearer credential is required")
            if operation is Operation.patch:
                request.body = entra_member_removals(request.body)
            unconditional = operation in RETRIED and not request.header("If-Match")
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    return self.handler.handle(request)
                except PreconditionFailedException:
                    # Without If-Match the client asked for no precondition: the 412 is a
                    # concurrent write between our read and our conditional write (store.directory
                    # ``_claim``), so the read-modify-write is done again on the new version.
                    if not unconditional or attempt == WRITE_ATTEMPTS:
                        raise
                    log.info("scim.write_retried", attempt=attempt)
            raise AssertionError("unreachable")
        except SCIMException as exc:
            return self.service.error_response(exc)
        except BackendUnavailableError as exc:
            return self.service.error_response(ScimUnavailable(detail=exc.message))
        except Exception as exc:  # a bug: a 500 without its message, logged by type only
            log.error("scim.unexpected", error=type(exc).__name__)
            return self.service.error_response(exc)

    def _record_refusal(self, request: ScimRequest, response: ScimResponse, request_id: str) -> None:
        body = response.body or {}
        try:
            self.write_audit.record(actor=self.actor, action=f"scim_{request.method.lower()}", outcome="refused",
                                    tenant=self.tenant, source=AUDIT_SOURCE, status=int(response.status),
                                    code=str(body.get("scimType") or f"scim_{int(response.status)}"),
                                    request_id=request_id, detail={"path": request.path[:200]})
        except BackendUnavailableError:
            log.warning("scim.refusal_unaudited", status=int(response.status))


def entra_member_removals(body: bytes) -> bytes:
    """Entra ID removes group members with ``{"op": "Remove", "path": "members", "value":
    [{"value": id}, ...]}``, which RFC 7644 §3.5.2.2 does not allow (a remove names what it
    removes in its path). Rewritten to one ``members[value eq "id"]`` removal per member, so the
    removal (a revocation) applies instead of failing with 400. Anything else is left as sent."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    ops = doc.get("Operations") if isinstance(doc, dict) else None
    if not isinstance(ops, list):
        return body
    out: list[Any] = []
    changed = False
    for op in ops:
        value = op.get("value") if isinstance(op, dict) else None
        if (isinstance(op, dict) and str(op.get("op", "")).lower() == "remove" and str(op.get("path", "")).lower() == "members"
                and isinstance(value, list) and value and all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in value)):
            out += [{"op": "remove", "path": f"members[value eq {json.dumps(v['value'])}]"} for v in value]
            changed = True
        else:
            out.append(op)
    if not changed:
        return body
    doc["Operations"] = out
    return json.dumps(doc).encode()


def scim_request(method: str, base_url: str, path: str, query: dict[str, str], headers: list[tuple[str, str]],
                 body: bytes) -> ScimRequest:
    """A ``ScimRequest`` for ``path`` under ``base_url`` (``.scim`` suffix removed, RFC 7644 §3.8)."""
    return ScimRequest(method=method, base_url=base_url, path=(path or "/").removesuffix(".scim"), query=query,
                       headers=headers, body=body)



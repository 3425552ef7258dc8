"""The MCP server (official ``mcp`` SDK): the ``search`` and ``fetch`` tools, over Streamable
HTTP at ``/mcp`` in the API's own app and process, and over stdio (``clearance mcp``).

Invariants:

- Authentication is the REST API's: every HTTP request to ``/mcp`` goes through
  ``services.auth.authenticate`` (the same validator, issuers, audience and principal mapping)
  and needs the ``clearance:search`` scope, *before* the MCP layer reads the request. Refusals are
  the app's ordinary error responses (401/403/503, ``{"error": …}``), and their
  ``WWW-Authenticate`` challenge carries ``resource_metadata`` (RFC 9728 §5.1) pointing at the
  protected resource metadata document of this endpoint.
- A token is accepted only if its audience is the configured one (``auth.issuers[].audience``;
  RFC 8707 audience binding): that check lives in the validator and is not repeated here.
- Tools see only the caller of the request that carries the call (``request.state.caller``);
  the transport is stateless, so no MCP session can carry one caller's identity into another's
  request. Over stdio the caller is the holder of ``CLEARANCE_TOKEN``, re-validated per call.
- Tools read only through ``services.reads`` (``app.reads.AuditedReads``): every tool call is
  audited like the REST read it mirrors (``search`` ↔ ``POST /v1/search``, ``fetch`` ↔
  ``GET /v1/documents/…``). ``fetch`` of a document the caller may not see is the same error as
  one that does not exist.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from api.errors import RESOURCE_METADATA_KEY  # set on /mcp requests: challenges point at the metadata
from auth.authenticator import SEARCH, Authenticator
from core.errors import ClearanceError, InvalidRequestError
from core.settings import Settings
from core.types import Entitlements, Scope
from retrieval.scope_filter import parse_metadata_filters

if TYPE_CHECKING:
    from app.services import Services

MCP_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"

INSTRUCTIONS = (
    "Clearance searches the organisation's documents with the end user's own permissions: every "
    "result is a document this user may read. Call `search` with a natural-language query; cite "
    "hits by their title and uri. Call `fetch` with a hit's `document_id` to read the whole "
    "document. If `low_confidence` is true the evidence is weak: say so rather than guess."
)


# -- tool results (the JSON schemas a model sees) ------------------------------------------------

class SearchHitOut(BaseModel):
    id: str = Field(description="chunk id")
    document_id: str = Field(description="pass to `fetch` to read the whole document")
    text: str = Field(description="the chunk's text")
    score: float
    title: str
    uri: str = Field(description="where the user can open the original")
    source: str
    doc_id: str
    section: str = ""
    page: int | None = None
    modified_at: str = Field(description="when the original last changed (ISO 8601)")
    version: str = ""


class SearchDocumentOut(BaseModel):
    document_id: str
    title: str
    uri: str
    score: float = Field(description="the document's best chunk score")
    hits: list[SearchHitOut]


class SearchOut(BaseModel):
    hits: list[SearchHitOut] = Field(description="ranked chunks, best first (empty when group_by=document)")
    documents: list[SearchDocumentOut] | None = Field(default=None, description="group_by=document only")
    low_confidence: bool | None = Field(
        description="true: even the best hit is a weak match; null in bm25 mode (no dense signal)")
    next_cursor: str | None = Field(default=None, description="pass back as `cursor` for more results")
    stale_sources: list[str] = Field(default_factory=list, description="sources whose data may be out of date")
    warnings: list[str] = Field(default_factory=list)


class FetchOut(BaseModel):
    id: str = Field(description="the document_id")
    title: str
    uri: str
    text: str = Field(description="the document's text, chunk after chunk")
    source: str
    doc_id: str
    version: str = ""
    modified_at: str = ""
    stale_sources: list[str] = Field(default_factory=list)


def document_id(source: str, doc_id: str) -> str:
    """Sources never hold ``/`` (the REST path would not route them); doc ids may."""
    return f"{source}/{doc_id}"


def _hit_out(h: Any) -> SearchHitOut:
    p = h.provenance
    return SearchHitOut(id=h.id, document_id=document_id(h.source, h.doc_id), text=h.text, score=round(h.score, 6),
                        title=str(p.get("title") or ""), uri=str(p.get("uri") or ""), source=h.source,
                        doc_id=h.doc_id, section=str(p.get("section") or ""),
                        page=p.get("page") if isinstance(p.get("page"), int) else None,
                        modified_at=str(p.get("modified_at") or ""), version=h.version)


# -- the tools, over any transport ---------------------------------------------------------------

# (services, caller) for the request that carries a tool call.
Resolve = Callable[[Context], "tuple[Services, Entitlements]"]


def _refuse(exc: ClearanceError) -> Exception:
    return ToolError(f"{exc.code}: {exc.message}")


def build_mcp_server(resolve: Resolve) -> MCPServer:
    server: MCPServer = MCPServer("clearance", title="Clearance", instructions=INSTRUCTIONS, version="0.1.0")

    @server.tool(name="search", title="Search documents the user may read")
    async def search(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, max_length=4000,
                                    description="what to look for, in natural language or keywords")],
        top_k: Annotated[int, Field(ge=1, le=100, description="how many results (documents when grouped)")] = 8,
        mode: Annotated[Literal["hybrid", "dense", "bm25"], Field(
            description="hybrid (default) combines meaning and keywords; bm25 for exact terms, codes and names")] = "hybrid",
        max_age: Annotated[int | None, Field(ge=1, description="only content modified in the last N seconds")] = None,
        sources: Annotated[list[str] | None, Field(min_length=1, description="only these sources")] = None,
        modified_after: Annotated[datetime | None, Field(description="only content modified at or after (ISO 8601)")] = None,
        modified_before: Annotated[datetime | None, Field(description="only content modified before (ISO 8601)")] = None,
        group_by: Annotated[Literal["chunk", "document"], Field(
            description="document: one entry per document with its best chunks (top_k counts documents)")] = "chunk",
        chunks_per_document: Annotated[int, Field(ge=1, le=20, description="chunks per document when grouped")] = 3,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="filters on declared metadata fields: {field: value} equality, {field: [v1, v2]} any of, "
                        "{field: {\"gte\": 1, \"lt\": 9}} numeric range")] = None,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous call, same arguments")] = None,
    ) -> SearchOut:
        """Search the organisation's documents with the user's own permissions. Returns the best
        matching passages with citation fields (title, uri, source, section, page, modified_at)
        and low_confidence. Use fetch(document_id) to read a whole document."""
        services, caller = resolve(ctx)
        after, before = _utc(modified_after), _utc(modified_before)
        scope = Scope(entitlements=caller, max_age_s=max_age, sources=frozenset(sources) if sources else None,
                      modified_after=after, modified_before=before)
        params: dict[str, Any] = {"max_age": max_age, "sources": sources,
                                  "modified_after": after.isoformat() if after else None,
                                  "modified_before": before.isoformat() if before else None,
                                  "explain": False, "via": "mcp"}
        if metadata:
            params["metadata"] = metadata
        try:
            filters = parse_metadata_filters(metadata or {})
            out = await anyio.to_thread.run_sync(lambda: services.reads.search(
                scope, query, top_k=top_k, mode=mode, explain=False, params=params, group_by=group_by,
                chunks_per_document=chunks_per_document, cursor=cursor, metadata=filters))
        except ClearanceError as exc:
            raise _refuse(exc) from None
        res = out.result
        documents = None
        if res.documents is not None:
            documents = []
            for g in res.documents:
                hits = [_hit_out(h) for h in g.hits]
                documents.append(SearchDocumentOut(document_id=document_id(g.source, g.doc_id), title=hits[0].title,
                                                   uri=hits[0].uri, score=round(g.score, 6), hits=hits))
        return SearchOut(hits=[] if documents is not None else [_hit_out(h) for h in res.hits], documents=documents,
                         low_confidence=res.low_confidence, next_cursor=out.next_cursor,
                         stale_sources=[s.name for s in out.stale],
                         warnings=res.warnings + [s.warning() for s in out.stale])

    @server.tool(name="fetch", title="Read one document")
    async def fetch(
        ctx: Context,
        id: Annotated[str, Field(min_length=3, max_length=2048,
                                 description="a document_id from search results (source/doc_id)")],
    ) -> FetchOut:
        """Read one whole document the user may see, by the document_id a search hit gave, with
        its provenance. A document that does not exist or that the user may not read is reported
        the same way: not_found."""
        services, caller = resolve(ctx)
        source, _, doc_id = id.partition("/")
        try:
            if not source or not doc_id:
                raise InvalidRequestError("id must be a document_id: source/doc_id")
            body, stale = await anyio.to_thread.run_sync(
                lambda: services.reads.document(Scope(entitlements=caller), source, doc_id))
        except ClearanceError as exc:
            raise _refuse(exc) from None
        prov = body["provenance"]
        return FetchOut(id=id, title=str(prov.get("title") or ""), uri=str(prov.get("uri") or ""),
                        text="\n\n".join(c["text"] for c in body["chunks"]), source=source, doc_id=doc_id,
                        version=str(prov.get("version") or ""), modified_at=str(prov.get("modified_at") or ""),
                        stale_sources=[s.name for s in stale])

    return server


def _utc(value: datetime | None) -> datetime | None:

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- Streamable HTTP at /mcp -------------------------------------------------------------------

def resource_url(settings: Settings, request: Request) -> str:
    base = settings.server.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return base + MCP_PATH


def metadata_url(settings: Settings, request: Request) -> str:
    """RFC 9728 §3.1: the well-known path inserted between the host and the resource's path."""
    parts = urlsplit(resource_url(settings, request))
    # It goes into a quoted challenge parameter: a Host header cannot break out of the quotes.
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path}".replace('"', "%22").replace("\\", "%5C")


def protected_resource_metadata(settings: Settings, request: Request) -> dict[str, Any]:
    """RFC 9728 §2: this endpoint as an OAuth protected resource."""
    auth = settings.auth
    servers = [auth.dev_issuer] if auth.mode == "dev" else [i.issuer for i in auth.issuers]
    return {
        "resource": resource_url(settings, request),
        "authorization_servers": servers,
        "scopes_supported": [SEARCH],
        "bearer_methods_supported": ["header"],
        "resource_name": "Clearance",
        "resource_documentation": str(request.base_url).rstrip("/") + "/docs",
    }


def _http_caller(ctx: Context) -> tuple[Services, Entitlements]:
    request = ctx.request_context.request
    caller = getattr(getattr(request, "state", None), "caller", None)
    if not isinstance(caller, Entitlements):  # never reached through McpEndpoint: fail closed
        raise ToolError("missing_token: not authenticated")
    return request.app.state.services, caller  # type: ignore[union-attr]


def _transport_security(settings: Settings) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    host = settings.server.host
    if host not in ("127.0.0.1", "localhost", "::1"):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if settings.server.public_url:
        parts = urlsplit(settings.server.public_url)
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


class McpEndpoint:
    """ASGI app at ``/mcp``: authenticate like every REST route, then hand over to the SDK's
    stateless Streamable HTTP transport. Refusals are raised to the app's error handlers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = build_mcp_server(_http_caller)
        # Stateless: each POST is a complete exchange, authenticated on its own; JSON answers.
        self.server.streamable_http_app(stateless_http=True, json_response=True,
                                        transport_security=_transport_security(settings))
        self.sessions = self.server.session_manager

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.sessions.run():
            yield

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        scope[RESOURCE_METADATA_KEY] = metadata_url(self.settings, request)
        services = request.app.state.services
        caller = await anyio.to_thread.run_sync(services.auth.authenticate, request.headers.get("authorization"))
        Authenticator.require(caller, SEARCH)
        scope.setdefault("state", {})["caller"] = caller
        await self.sessions.handle_request(scope, receive, send)


def install(app: Any, settings: Settings) -> McpEndpoint:
    """Mount ``/mcp`` and the protected resource metadata on ``app``; the caller runs
    ``endpoint.running()`` in the app's lifespan."""
    from starlette.routing import Route

    # The SDK logs every stateless exchange at INFO ("Terminating session", "Processing
    # request"); our own logs and the audit trail already record each call.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    endpoint = McpEndpoint(settings)
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse(protected_resource_metadata(settings, request),
                            headers={"Cache-Control": "public, max-age=3600"})

    for path in (METADATA_PATH, METADATA_PATH + MCP_PATH):
        app.add_route(path, metadata, methods=["GET"], include_in_schema=False)
    return endpoint


# -- stdio -----------------------------------------------------------------------------------

def run_stdio(services: Services, token: Callable[[], str]) -> None:
    """Serve the tools on stdin/stdout for a local assistant, as the holder of ``token()``."""
    import anyio

    def resolve(_ctx: Context) -> tuple[Services, Entitlements]:
        try:
            caller = services.auth.authenticate(f"Bearer {token()}")
            Authenticator.require(caller, SEARCH)
        except ClearanceError as exc:
            raise _refuse(exc) from None
        return services, caller

    anyio.run(build_mcp_server(resolve).run_stdio_async)

"""Push API for systems of record: PUT a document (content + metadata + ACL), PATCH its ACL
alone (never re-embeds), DELETE it. A document sent without an ACL is private (fail closed).

Routes only parse and map: the write itself, and who may make it (``clearance:ingest`` and one
of the source's writer principals, audited either way), is ``app.writes.WriteService``."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field, model_validator

from api.deps import AuthenticatedRoute, ServicesDep, writer
from api.errors import error_responses
from api.fields import RequestBody, UtcDateTime
from core.errors import InvalidRequestError
from core.types import Acl, Entitlements, SourceDocument

PutCaller = Annotated[Entitlements, Depends(writer("put"))]
PatchCaller = Annotated[Entitlements, Depends(writer("patch_acl"))]
DeleteCaller = Annotated[Entitlements, Depends(writer("delete"))]

router = APIRouter(tags=["push"], route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 404, 409, 422, 503))


class AclBody(RequestBody):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)

    def to_acl(self) -> Acl:
        try:
            return Acl(frozenset(self.allow), frozenset(self.deny))
        except ValueError as exc:
            raise InvalidRequestError(str(exc), code="invalid_acl") from exc


class PutDocument(RequestBody):
    filename: str = Field(min_length=1, max_length=255, description="name with extension; selects the parser")
    content: str | None = Field(default=None, description="UTF-8 text content")
    content_base64: str | None = Field(default=None, description="binary content, base64")
    title: str = ""
    uri: str | None = None
    modified_at: UtcDateTime | None = None
    acl: AclBody | None = Field(default=None, description="omitted: the document is private")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_content(self) -> PutDocument:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError("send exactly one of content and content_base64")
        return self

    def raw(self) -> bytes:
        if self.content is not None:
            return self.content.encode("utf-8")
        try:
            return base64.b64decode(self.content_base64 or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError("content_base64 is not valid base64") from exc


@router.put("/v1/sources/{source}/documents/{doc_id:path}", responses=error_responses(400, 404))
def put_document(source: str, doc_id: str, body: PutDocument, caller: PutCaller, services: ServicesDep) -> dict:
    doc = SourceDocument(
        source=source, doc_id=doc_id, uri=body.uri or f"clearance://{source}/{doc_id}",
        filename=PurePosixPath(body.filename).name, content=body.raw(),
        acl=body.acl.to_acl() if body.acl is not None else Acl.private(),
        modified_at=body.modified_at or datetime.now(UTC),
        title=body.title or PurePosixPath(body.filename).stem,
        metadata={k: str(v) for k, v in body.metadata.items()},
    )
    out = services.writes.put_document(caller, doc, body.metadata, modified_at_given=body.modified_at is not None)
    return {"source": source, "doc_id": doc_id, "outcome": out.outcome, "chunks": out.chunks}


@router.patch("/v1/sources/{source}/documents/{doc_id:path}/acl", responses=error_responses(400, 404))
def patch_acl(source: str, doc_id: str, body: AclBody, caller: PatchCaller, services: ServicesDep) -> dict:
    services.writes.set_acl(caller, source, doc_id, body.to_acl())
    return {"source": source, "doc_id": doc_id, "outcome": "acl_updated"}


@router.delete("/v1/sources/{source}/documents/{doc_id:path}", status_code=204, responses=error_responses(404))
def delete_document(source: str, doc_id: str, caller: DeleteCaller, services: ServicesDep) -> Response:
    services.writes.delete_document(caller, source, doc_id)
    return Response(status_code=204)

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AuthenticatedRoute, Caller, ServicesDep
from api.errors import error_responses
from core.errors import NotFoundError

router = APIRouter(tags=["identity"], route_class=AuthenticatedRoute)


class WhoAmI(BaseModel):
    subject: str
    issuer: str
    tenant: str
    principals: list[str]
    scopes: list[str]


@router.get("/v1/whoami", response_model=WhoAmI, responses=error_responses(401, 503))
def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(subject=caller.subject, issuer=caller.issuer, tenant=caller.tenant,
                  principals=sorted(caller.principals), scopes=sorted(caller.scopes))


@router.get("/dev-issuer/jwks.json", include_in_schema=False)
def dev_jwks(services: ServicesDep) -> dict:
    if services.auth.dev is None:
        raise NotFoundError("no dev issuer in this mode")
    return services.auth.dev.jwks()


@router.get("/dev-issuer/.well-known/openid-configuration", include_in_schema=False)
def dev_discovery(services: ServicesDep) -> dict:
    if services.auth.dev is None:
        raise NotFoundError("no dev issuer in this mode")
    iss = services.settings.auth.dev_issuer
    return {"issuer": iss, "jwks_uri": iss + "/jwks.json", "id_token_signing_alg_values_supported": ["RS256"]}

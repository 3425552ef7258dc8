"""``Annotated`` dependency aliases for route handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.services import Services
from auth.authenticator import ADMIN, INGEST, SEARCH, Authenticator
from core.types import Entitlements


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def current_caller(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> Entitlements:
    return services.auth.authenticate(authorization)


Caller = Annotated[Entitlements, Depends(current_caller)]


def searcher(caller: Caller) -> Entitlements:
    Authenticator.require(caller, SEARCH)
    return caller


def ingester(caller: Caller) -> Entitlements:
    Authenticator.require(caller, INGEST)
    return caller


def administrator(caller: Caller) -> Entitlements:
    Authenticator.require(caller, ADMIN)
    return caller


SearchCaller = Annotated[Entitlements, Depends(searcher)]
IngestCaller = Annotated[Entitlements, Depends(ingester)]
AdminCaller = Annotated[Entitlements, Depends(administrator)]

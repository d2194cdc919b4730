"""API keys: ``Authorization: Bearer <key>``, each key mapped to a tenant by ``MASKQ_API_KEYS``.

Keys are compared with :func:`hmac.compare_digest` against every configured key (no early exit), so
the time taken tells nothing about how much of a key was right. A job of another tenant is answered
404 by the routes (``JobStore.require(id, tenant)``), never 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maskq import logging as mlog
from maskq.errors import UnauthorizedError

bearer = HTTPBearer(auto_error=False, description="An API key from MASKQ_API_KEYS")


class KeyRing:
    def __init__(self, key_map: dict[str, str]) -> None:
        self._pairs = [(k.encode(), t) for k, t in key_map.items()]

    def tenant_of(self, key: str) -> str | None:
        given = key.encode()
        found: str | None = None
        for k, tenant in self._pairs:
            if hmac.compare_digest(k, given):
                found = tenant
        return found


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    tenant = request.app.state.services.keys.tenant_of(credentials.credentials)
    if tenant is None:
        raise UnauthorizedError("unknown API key")
    request.state.tenant = tenant
    mlog.bind_fields(tenant=tenant)
    return tenant


async def require_tenant(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> str:
    """The dependency every /v1 route takes: the caller's tenant, or 401."""
    return authenticate(request, credentials)

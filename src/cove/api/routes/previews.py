"""Preview URLs of a sandbox's ports (``/api/sandbox/{id}/ports/{port}/...``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.preview import preview_url, signed_url
from cove.core.previews import MAX_SIGNED_SECONDS, check_port
from cove.schemas.network import PreviewUrl, SignedPreviewUrl

router = APIRouter(prefix="/sandbox", tags=["preview"])
Port = Annotated[int, Path(ge=1, le=65535)]
Seconds = Annotated[int | None, Query(ge=1, le=MAX_SIGNED_SECONDS)]


@router.get("/{id_or_name}/ports/{port}/preview-url")
async def get_preview_url(
    id_or_name: str, port: Port, who: PrincipalDep, services: ServicesDep
) -> PreviewUrl:
    """The preview URL of a port, and the token a private sandbox needs."""
    check_port(port)
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    return PreviewUrl(
        sandbox_id=sandbox.id, url=preview_url(services, sandbox.id, port),
        token=services.previews.token(sandbox.id),
    )  # fmt: skip


@router.get("/{id_or_name}/ports/{port}/signed-preview-url")
async def get_signed_preview_url(
    id_or_name: str, port: Port, who: PrincipalDep, services: ServicesDep,
    expires_in_seconds: Seconds = None, expiresInSeconds: Seconds = None,  # noqa: N803
) -> SignedPreviewUrl:  # fmt: skip
    """A preview URL with its token inside, valid for ``expiresInSeconds`` (default 60)."""
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    expires = expiresInSeconds if expiresInSeconds is not None else expires_in_seconds
    token = services.previews.sign(sandbox.id, port, expires)
    return SignedPreviewUrl(
        sandbox_id=sandbox.id, port=port, token=token, url=signed_url(services, token)
    )


@router.post("/{id_or_name}/ports/{port}/signed-preview-url/{token}/expire",
             response_class=Response)
async def expire_signed_preview_url(
    id_or_name: str, port: Port, token: Annotated[str, Path(max_length=256)],
    who: PrincipalDep, services: ServicesDep,
) -> Response:
    """Make a signed preview URL stop working now."""
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    services.previews.expire(sandbox.id, port, token)
    return Response(status_code=200)

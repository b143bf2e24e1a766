"""Secret endpoints (``/api/secret``), per organization; values are write-only."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from cove.api.deps import PrincipalDep, SecretsDep
from cove.api.dto import iso
from cove.core.secrets import Secret
from cove.schemas.limits import NO_NUL
from cove.schemas.secret import SecretCreate, SecretPublic, SecretsPage, SecretUpdate

router = APIRouter(prefix="/secret", tags=["secret"])


def secret_public(s: Secret) -> SecretPublic:
    return SecretPublic(
        id=s.id, name=s.name, description=s.description, placeholder=s.placeholder,
        hosts=list(s.hosts), created_at=iso(s.created_at), updated_at=iso(s.updated_at),
    )  # fmt: skip


@router.post("", status_code=201)
async def create_secret(body: SecretCreate, who: PrincipalDep, secrets: SecretsDep) -> SecretPublic:
    """Create a secret (its value is stored encrypted and never returned)."""
    return secret_public(secrets.create(who.organization_id, **body.model_dump()))


@router.get("/paginated")
async def list_secrets(
    who: PrincipalDep, secrets: SecretsDep,
    cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    name: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    sort: Literal["name", "createdAt", "updatedAt"] = "createdAt",
    order: Literal["asc", "desc"] = "desc",
) -> SecretsPage:  # fmt: skip
    """The organization's secrets, one page at a time (``nextCursor`` for the next)."""
    page = secrets.list(who.organization_id, cursor=cursor, limit=limit, name=name, sort=sort,
                        order=order)  # fmt: skip
    return SecretsPage(items=[secret_public(s) for s in page.items], total=page.total,
                       next_cursor=page.next_cursor)  # fmt: skip


@router.get("/{secret_id}")
async def get_secret(secret_id: str, who: PrincipalDep, secrets: SecretsDep) -> SecretPublic:
    """One of the organization's secrets (without its value)."""
    return secret_public(secrets.get(who.organization_id, secret_id))


@router.patch("/{secret_id}")
async def update_secret(
    secret_id: str, body: SecretUpdate, who: PrincipalDep, secrets: SecretsDep
) -> SecretPublic:
    """Change the value, description or hosts given; the others stay."""
    return secret_public(secrets.update(who.organization_id, secret_id, **body.model_dump()))


@router.delete("/{secret_id}", status_code=204)
async def delete_secret(secret_id: str, who: PrincipalDep, secrets: SecretsDep) -> Response:
    """Delete a secret; sandboxes that mounted it lose that env var (for new processes)."""
    secrets.delete(who.organization_id, secret_id)
    return Response(status_code=204)

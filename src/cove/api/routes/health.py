"""Liveness: answers once the server can serve (the lifespan has finished)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Report that the server is up."""
    return {"status": "ok"}

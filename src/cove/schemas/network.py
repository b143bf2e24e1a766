"""Wire models of a sandbox's network settings and preview URLs."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import Text


class NetworkSettingsUpdate(WireModel):
    """Body of ``POST /sandbox/{id}/network-settings``; absent fields stay as they are."""

    network_block_all: bool | None = None
    network_allow_list: Text | None = Field(default=None, max_length=4096)
    domain_allow_list: Text | None = Field(default=None, max_length=32768)


class PreviewUrl(WireModel):
    """A port's preview URL and the token a private sandbox needs."""

    sandbox_id: str
    url: str
    token: str


class SignedPreviewUrl(WireModel):
    """A preview URL whose token is in the URL itself and expires."""

    sandbox_id: str
    port: int
    token: str
    url: str

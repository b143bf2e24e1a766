"""``GET /config``: Daytona's DaytonaConfiguration, the fields its SDKs require."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel


class OidcConfig(WireModel):
    issuer: str
    client_id: str
    audience: str
    provider: str


class DaytonaConfiguration(WireModel):
    version: str
    oidc: OidcConfig
    linked_accounts_enabled: bool = False
    announcements: dict[str, dict[str, str]] = Field(default_factory=dict)
    proxy_template_url: str
    proxy_toolbox_url: str
    default_snapshot: str
    dashboard_url: str
    max_auto_archive_interval: int
    maintanance_mode: bool = False  # sic: Daytona's spelling
    environment: str = "cove"
    analytics_api_url: str | None = None

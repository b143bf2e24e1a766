"""``GET /api/config``: what Daytona's clients read about the deployment (no secrets)."""

from __future__ import annotations

from fastapi import APIRouter

from cove.api.deps import ServicesDep
from cove.api.preview import preview_url
from cove.core.sandbox import MAX_ARCHIVE_MINUTES
from cove.schemas.config import DaytonaConfiguration, OidcConfig

router = APIRouter(tags=["config"])


@router.get("/config")
async def get_config(services: ServicesDep) -> DaytonaConfiguration:
    """The deployment's configuration; needs no API key, as on Daytona. Daytona's
    analytics API (usage, sandbox metrics) is served by this server under /api/analytics."""
    settings = services.settings
    base = settings.toolbox_proxy_url.removesuffix("/toolbox")
    template = f"{base}/preview/{{{{sandboxId}}}}/{{{{PORT}}}}"
    if settings.preview_domain:  # served by host name only
        template = preview_url(services, "{{sandboxId}}", "{{PORT}}")
    return DaytonaConfiguration(
        version="cove", oidc=OidcConfig(issuer="", client_id="", audience="", provider="none"),
        proxy_template_url=template,
        proxy_toolbox_url=settings.toolbox_proxy_url, default_snapshot=settings.default_snapshot,
        dashboard_url=base, max_auto_archive_interval=MAX_ARCHIVE_MINUTES,
        analytics_api_url=f"{base}/api/analytics",
    )  # fmt: skip

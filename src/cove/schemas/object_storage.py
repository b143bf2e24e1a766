"""Wire models of ``/api/object-storage``."""

from __future__ import annotations

from cove.schemas.base import WireModel


class StorageAccess(WireModel):
    """Daytona's ``StorageAccessDto``: where and how to upload build contexts."""

    access_key: str
    secret: str
    session_token: str
    storage_url: str
    organization_id: str
    bucket: str
    region: str

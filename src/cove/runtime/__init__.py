"""Isolation runtimes implementing :class:`cove.core.ports.Runtime`."""

from __future__ import annotations

from cove.core.config import Settings
from cove.core.ports import Runtime


def build_runtime(settings: Settings) -> Runtime:
    """The runtime ``settings.runtime`` names: ``crun`` (default) or ``fake`` (tests)."""
    if settings.runtime == "fake":
        from cove.runtime.fake import FakeRuntime

        return FakeRuntime([settings.default_snapshot])
    if settings.runtime == "crun":
        from cove.runtime.oci import OciRuntime

        return OciRuntime(settings)
    raise ValueError(f"unknown runtime '{settings.runtime}' (use 'crun')")

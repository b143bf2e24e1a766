"""Running sandboxes on this host: :class:`cove.runtime.host.HostRuntime`
implementations (crun/runsc, or fake for unit tests) behind
:class:`cove.runtime.runner.LocalRunner`."""

from __future__ import annotations

from cove.core.config import Settings
from cove.runtime.host import HostRuntime


def build_runtime(settings: Settings) -> HostRuntime:
    """The runtime ``settings.runtime`` names: ``crun`` (default) or ``fake`` (tests)."""
    if settings.runtime == "fake":
        from cove.runtime.fake import FakeRuntime

        return FakeRuntime([settings.default_snapshot])
    if settings.runtime == "crun":
        from cove.runtime.oci import OciRuntime

        return OciRuntime(settings)
    raise ValueError(f"unknown runtime '{settings.runtime}' (use 'crun')")

"""The runner: where sandboxes run, behind the domain's ``Runner`` port.

:class:`cove.runner.local.LocalRunner` implements ``cove.core.ports.Runner`` on
this host over a :class:`cove.runner.hostruntime.HostRuntime`: the real one,
:class:`cove.runner.oci.runtime.OciRuntime` (``oci/``: crun or runsc per
sandbox), or :class:`cove.runner.fake.FakeRuntime` for unit tests. ``host/``
holds the host mechanics (cgroups, network, firewall, mounts, disks), ``storage/``
snapshots, archives and volumes; ``layout.py`` the sandbox's files on disk.
"""

from __future__ import annotations

from cove.core.config import Settings
from cove.runner.hostruntime import HostRuntime


def build_runtime(settings: Settings) -> HostRuntime:
    """The runtime ``settings.runtime`` names: ``crun`` (default) or ``fake`` (tests)."""
    if settings.runtime == "fake":
        from cove.runner.fake import FakeRuntime

        return FakeRuntime([settings.default_snapshot])
    if settings.runtime == "crun":
        from cove.runner.oci.runtime import OciRuntime

        return OciRuntime(settings)
    raise ValueError(f"unknown runtime '{settings.runtime}' (use 'crun')")

"""Cove: a self-hosted sandbox server, wire-compatible with Daytona.

Layers (see docs/architecture.md): ``cove.api`` (HTTP transport) and
``cove.cli`` on top; ``cove.core`` (the domain, with its ports); ``cove.runner``
(running sandboxes on this host), ``cove.store`` (the database) and
``cove.agent`` (the agent inside each sandbox) below it; ``cove.server`` wires
them together.
"""

__version__ = "0.1.0"

import warnings

# asyncssh reads cryptography's DSA classes when it is imported, and cryptography 51
# deprecates DSA with a warning at that read (a notice, nothing fails). Cove makes no
# DSA key (its SSH host key is Ed25519) and its SSH gateway takes no client keys: the
# notice would be noise at every start, so it is silenced for asyncssh alone.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")

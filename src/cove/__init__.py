"""Cove: a self-hosted sandbox server, wire-compatible with Daytona.

Layers (see docs/architecture.md): ``cove.api`` (HTTP transport) and
``cove.cli`` on top; ``cove.core`` (the domain, with its ports); ``cove.runner``
(running sandboxes on this host), ``cove.store`` (the database) and
``cove.agent`` (the agent inside each sandbox) below it; ``cove.server`` wires
them together.
"""

__version__ = "0.1.0"

"""The agent that runs INSIDE each sandbox and serves its toolbox, and its wire.

Everything in this package runs inside sandboxes on a Python runtime that Cove
provides (never the image's Python), so it uses the standard library only and
imports nothing from the server. Modules import each other relatively: inside a
sandbox the package is mounted as ``toolbox``, on the server it is ``cove.agent``.
The server shares only the wire: ``protocol.py`` (frames) and ``mux.py``
(streams over one channel); its side of a call is ``cove.core.agent_call``.
"""

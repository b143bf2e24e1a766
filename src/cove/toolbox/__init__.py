"""The in-sandbox toolbox agent and its protocol.

Everything in this package runs inside sandboxes on a Python runtime that Cove
provides (never the image's Python), so it uses the standard library only and
imports nothing from the server. Modules import each other relatively: inside a
sandbox the package is mounted as ``toolbox``, on the server it is ``cove.toolbox``.
"""

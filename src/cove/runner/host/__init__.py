"""Host mechanics a sandbox is built from, independent of the OCI tool.

Cgroups (``cgroups.py``, ``cgtree.py``, ``freezer.py``), the sandbox's network
namespace, veth pair, nftables egress firewall and DNS forwarder
(``network.py``, ``firewall.py``, ``dns.py``), mounts and the new mount API
(``mounts.py``, ``mountapi.py``), the idmapped overlay rootfs and its disk
(``rootfs.py``, ``disk.py``), uid/gid ranges (``idrange.py``), one-time host
preparation (``hostprep.py``) and running host commands (``proc.py``).
"""

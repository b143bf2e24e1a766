"""Isolation: running a sandbox as an OCI container on this host.

:class:`~cove.runner.oci.runtime.OciRuntime` implements the host runtime over an
OCI tool chosen per sandbox: ``crun`` (``crun.py``, brought up by
``container.py``) or gVisor's ``runsc`` (``runsc.py``, ``gvisor.py``,
``gvisor_view.py``). Here too are the container's OCI spec and seccomp profile
(``spec.py``, ``seccomp.py``, ``seccomp_bpf.py``), the sandbox's init and the
namespace helper compiled from C (``init.c``, ``nsexec.c``, ``initbin.py``), and
the host side of the agent: the Python runtime it runs on (``pyrt.py``) and how
it is mounted, started and reached (``agent_setup.py``).
"""

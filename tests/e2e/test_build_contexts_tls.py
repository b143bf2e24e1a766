"""The unchanged SDK uploads a build context to Cove served over HTTPS
(``COVE_TLS_CERT``/``COVE_TLS_KEY``): its uploader (obstore) speaks HTTPS only and
trusts only the system CA store, so the client runs in a private mount namespace
where the system bundle includes the test CA (the host's own store is untouched).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cove.testing import ServerProcess
from tests.e2e.conftest import KEY

pytestmark = pytest.mark.e2e
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
             "-subj", "/CN=cove-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(d / "key.pem"), "-out", str(d / "leaf.csr"),
             "-subj", "/CN=cove")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")  # fmt: skip
    _openssl("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "cert.pem"),
             "-days", "1", "-extfile", str(d / "ext.cnf"))  # fmt: skip
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    ca, cert, key = _certificates(certs)
    bundle = certs / "bundle.pem"
    bundle.write_bytes(SYSTEM_BUNDLE.read_bytes() + ca.read_bytes())
    data = tmp_path_factory.mktemp("cove-tls")
    server = ServerProcess(data, api_key=KEY, env={
        "COVE_TLS_CERT": str(cert), "COVE_TLS_KEY": str(key), "COVE_NETWORK": "none"})  # fmt: skip
    server.url = f"https://127.0.0.1:{server.port}"
    server.api_url = f"{server.url}/api"
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(bundle)  # the harness's health checks trust it too
    try:
        server.start()
        yield server, bundle
    finally:
        server.stop()
        if old is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = old


CLIENT = textwrap.dedent("""
    import sys
    from daytona import CreateSnapshotParams, Daytona, DaytonaConfig, Image
    api_url, name, path = sys.argv[1:4]
    client = Daytona(DaytonaConfig(api_key="{key}", api_url=api_url))
    image = Image.base("cove-default").add_local_file(path, "/opt/tls.txt").run_commands(
        "cat /opt/tls.txt")
    snap = client.snapshot.create(CreateSnapshotParams(name=name, image=image),
                                  on_logs=print, timeout=600)
    print("STATE", snap.state)
""")


def test_the_unchanged_sdk_uploads_contexts_over_https(
    tls_server: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, bundle = tls_server
    marker = uuid.uuid4().hex
    (tmp_path / "tls.txt").write_text(marker)
    (tmp_path / "client.py").write_text(CLIENT.replace("{key}", KEY))
    name = f"tls-{marker[:10]}"
    inner = (f'mount --bind "{bundle}" {SYSTEM_BUNDLE} && exec "{sys.executable}" '
             f'"{tmp_path / "client.py"}" "{server.api_url}" {name} "{tmp_path / "tls.txt"}"')
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        assert "STATE SnapshotState.ACTIVE" in done.stdout or "STATE active" in done.stdout
        assert marker in done.stdout  # the RUN printed the uploaded file
    finally:
        httpx.delete(f"{server.api_url}/snapshots/{name}",
                     headers={"Authorization": f"Bearer {KEY}"}, verify=str(bundle),
                     timeout=300)  # removing a 1.5 GB snapshot tree takes a while  # fmt: skip

"""Signed file URLs: ``sandbox.download_url`` (Python SDK) and URLs built by hand the
way the TypeScript SDK builds them download a file without an API key, for that
sandbox and path only, until they expire or the key is rotated or the sandbox deleted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import time
from urllib.parse import unquote, urlencode

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
FILE = "/home/daytona/report.txt"


def _signed(sb, key: str, path: str, expires: int, method: str = "GET",  # noqa: ANN001
            sandbox_id: str | None = None) -> str:  # fmt: skip
    """A download URL as the TS SDK's ``downloadUrl`` builds it."""
    canonical = f"v1:files:{method}:{path}:{expires}".encode()
    sig = "v1_" + base64.urlsafe_b64encode(
        hmac.new(key.encode(), canonical, hashlib.sha256).digest()).rstrip(b"=").decode()
    query = urlencode({"path": path, "expires": str(expires), "signature": sig})
    return f"{sb.toolbox_proxy_url.rstrip('/')}/{sandbox_id or sb.id}/files/download?{query}"


def _key(server: Server, sandbox_id: str, api_key: str = KEY) -> httpx.Response:
    return httpx.get(f"{server.api_url}/sandbox/{sandbox_id}/signing-key",
                     headers={"Authorization": f"Bearer {api_key}"})  # fmt: skip


def _refused(url: str, status: int = 401) -> None:
    reply = httpx.get(url)
    assert reply.status_code == status, reply.text
    assert reply.json()["statusCode"] == status and reply.json()["message"]


def test_a_signed_url_downloads_without_an_api_key_until_it_expires(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    other_sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes += [sb, other_sb]
    sb.fs.upload_file(b"quarterly numbers\n", FILE)
    sb.fs.upload_file(b"private\n", "/home/daytona/other.txt")
    other_sb.fs.upload_file(b"the other sandbox\n", FILE)
    # The Python SDK's own URL, fetched by a client that has no API key.
    reply = httpx.get(sb.download_url(FILE, ttl_seconds=60))
    assert reply.status_code == 200 and reply.content == b"quarterly numbers\n"
    key = _key(server, sb.id).json()
    assert isinstance(key, str) and len(key) >= 32
    assert _key(server, sb.id).json() == key  # stable until rotated
    now = int(time.time())
    assert httpx.get(_signed(sb, key, FILE, now + 60)).content == b"quarterly numbers\n"
    assert httpx.get(_signed(sb, key, FILE, 0)).status_code == 200  # 0: never expires
    # Expired, tampered, for another path, method or sandbox: 401 in the envelope.
    _refused(_signed(sb, key, FILE, now - 1))
    _refused(_signed(sb, key, FILE, now + 60).replace("signature=v1_", "signature=v1_A"))
    _refused(_signed(sb, key, FILE, now + 60).replace("report.txt", "other.txt"))
    _refused(_signed(sb, key, FILE, now + 60, method="POST"))
    _refused(_signed(sb, key, FILE, now + 60, sandbox_id=other_sb.id))
    _refused(_signed(sb, key, FILE, now + 60).replace(f"expires={now + 60}", f"expires={now + 99}"))
    _refused(_signed(sb, key, FILE, now + 60).split("&signature=")[0])
    _refused(f"{sb.toolbox_proxy_url}/{sb.id}/files/download?path={FILE}")  # neither key nor sig
    # A name no header can carry as is (emoji, a control character, a quote) comes back
    # under RFC 6266's filename*, not a 500.
    odd = "/home/daytona/\U0001f3fb\x10\"8.txt"
    sb.fs.upload_file(b"odd\n", odd)
    reply = httpx.get(_signed(sb, key, odd, now + 60))
    assert reply.status_code == 200 and reply.content == b"odd\n"
    disposition = reply.headers["content-disposition"]
    assert unquote(disposition.split("filename*=utf-8''")[1]) == odd.rsplit("/", 1)[1]
    # A missing file is the daemon's 404, signed or not.
    _refused(_signed(sb, key, "/home/daytona/nope", now + 60), 404)
    # The key never enters the sandbox.
    assert key not in sb.process.exec("cat /proc/1/environ; env").result
    # Rotation: URLs signed before stop working at once.
    old = _signed(sb, key, FILE, now + 60)
    new_key = httpx.post(f"{server.api_url}/sandbox/{sb.id}/signing-key/rotate",
                         headers={"Authorization": f"Bearer {KEY}"}).json()  # fmt: skip
    assert new_key != key and _key(server, sb.id).json() == new_key
    _refused(old)
    assert httpx.get(_signed(sb, new_key, FILE, now + 60)).status_code == 200


def test_keys_are_the_organizations_and_go_with_the_sandbox(
    server: Server, daytona: Daytona
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    try:
        key = _key(server, sb.id).json()
        stored = server.data_dir / "signing-keys" / sb.id
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        other = server.org_key("signing-other")
        assert _key(server, sb.id, other).status_code == 404
        rotate = httpx.post(f"{server.api_url}/sandbox/{sb.id}/signing-key/rotate",
                            headers={"Authorization": f"Bearer {other}"})  # fmt: skip
        assert rotate.status_code == 404 and _key(server, sb.id).json() == key
        url = _signed(sb, key, "/etc/hostname", 0)
        assert httpx.get(url).status_code == 200
        sb.stop()
        _refused(url, 400)  # the sandbox is stopped: the toolbox's answer
        sb.start()
    finally:
        sb.delete()
    assert not stored.exists()
    _refused(url)


def test_a_signed_upload_url_writes_one_file(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    url = sb.upload_url("/home/daytona/up/data.bin", ttl_seconds=60)
    reply = httpx.post(url, files={"file": ("data.bin", b"\x00payload\xff" * 1000)})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"path": "/home/daytona/up/data.bin", "bytes": 9000}
    assert sb.fs.download_file("/home/daytona/up/data.bin") == b"\x00payload\xff" * 1000
    # a raw body works too, and overwrites
    raw = httpx.post(url, content=b"raw", headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 200 and sb.fs.download_file("/home/daytona/up/data.bin") == b"raw"
    # the signature is for POST on that path only
    _refused(url.replace("/files/upload-v2", "/files/download"))
    other = httpx.post(url.replace("data.bin", "other.bin"), files={"file": ("x", b"x")})
    assert other.status_code == 401
    tampered = httpx.post(url.replace("signature=v1_", "signature=v1_x"), content=b"x")
    assert tampered.status_code == 401 and tampered.json()["statusCode"] == 401
    assert sb.process.exec("ls /home/daytona/up").result.split() == ["data.bin"]
    # a form without a part named file is a 400, and writes nothing
    bad = httpx.post(sb.upload_url("/home/daytona/up/x.bin"), files={"other": ("x", b"x")})
    assert bad.status_code == 400 and "file" in bad.json()["message"]
    assert sb.process.exec("ls /home/daytona/up").result.split() == ["data.bin"]

"""A real OCI registry on loopback for tests (Debian's ``docker-registry``, distribution
v2), and test images built from tar layers written here, pushed with skopeo."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from cove.testing import free_port

Member = tuple[tarfile.TarInfo, bytes | None]
Answer = Callable[[http.server.BaseHTTPRequestHandler], None]
SECRET = "internal-secret-4242"


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<free port>, storage in ``root``; with
    ``user``/``password``, every request needs them (htpasswd, bcrypt)."""

    def __init__(self, root: Path, *, user: str | None = None, password: str | None = None,
                 bind: str = "127.0.0.1"):  # fmt: skip
        self.root = root
        self.port = free_port()
        self.host = f"{bind}:{self.port}"
        self.user, self.password = user, password
        self.log = root / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        if shutil.which("docker-registry") is None:
            raise RuntimeError("docker-registry is not installed: run scripts/install")
        config = (f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
                  f"    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
                  f"http:\n  addr: {self.host}\n")  # fmt: skip
        if self.user:
            hashed = subprocess.run(["htpasswd", "-Bbn", self.user, self.password or ""],
                                    capture_output=True, text=True, check=True).stdout  # fmt: skip
            (self.root / "htpasswd").write_text(hashed)
            htpasswd = self.root / "htpasswd"
            config += f"auth:\n  htpasswd:\n    realm: cove-test\n    path: {htpasswd}\n"
        (self.root / "config.yml").write_text(config)
        with self.log.open("ab") as log:
            argv = ["docker-registry", "serve", str(self.root / "config.yml")]
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def push(self, layout: Path, name: str, tag: str = "v1") -> str:
        """Push ``layout:v1`` as ``name:tag``; returns ``host/name:tag``."""
        ref = f"{self.host}/{name}:{tag}"
        argv = ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"]
        if self.user:
            argv.insert(2, f"--dest-creds={self.user}:{self.password}")
        subprocess.run(argv, capture_output=True, check=True)
        return ref

    def digest(self, ref: str) -> str:
        """The manifest digest of ``host/name:tag``."""
        argv = ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                f"docker://{ref}"]  # fmt: skip
        if self.user:
            argv.insert(2, f"--creds={self.user}:{self.password}")
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def file(path: str, data: bytes = b"", *, mode: int = 0o644, uid: int = 0) -> Member:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
    return info, data


def entry(path: str, kind: bytes, *, target: str = "", mode: int = 0o755, uid: int = 0) -> Member:
    """A directory (DIRTYPE), symlink (SYMTYPE), hard link (LNKTYPE) or device (CHRTYPE)."""
    info = tarfile.TarInfo(path)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, target, mode, uid, uid
    return info, None


def layer(members: Iterable[Member]) -> bytes:
    """A gzipped tar layer of ``members``, in order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class ImageSpec:
    layers: list[bytes]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = ""
    user: str = ""
    cmd: tuple[str, ...] = ("/bin/sh",)
    entrypoint: tuple[str, ...] = ()


def layout(path: Path, image: ImageSpec) -> Path:
    """Write ``image`` as the OCI layout ``path`` with tag ``v1``."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(lay)).hexdigest()}"
                for lay in image.layers]  # fmt: skip
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": list(image.env), "WorkingDir": image.workdir, "User": image.user,
                         "Cmd": list(image.cmd), "Entrypoint": list(image.entrypoint) or None},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}  # fmt: skip
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(lay, "application/vnd.oci.image.layer.v1.tar+gzip")
                   for lay in image.layers],
    }  # fmt: skip
    entry_ = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    entry_["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry_]}))
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return path


def busybox_layer(marker: str = "from-registry") -> bytes:
    """A root filesystem with busybox (its applets as symlinks), users root and daytona
    (1000), /srv/app and a marker file."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox-static is not installed: run scripts/install")
    members = [entry(d, tarfile.DIRTYPE) for d in ("bin", "etc", "tmp", "root", "srv", "srv/app")]
    members += [entry("home", tarfile.DIRTYPE), entry("home/daytona", tarfile.DIRTYPE, uid=1000)]
    members.append(file("bin/busybox", Path(busybox).read_bytes(), mode=0o755))
    members += [entry(f"bin/{tool}", tarfile.SYMTYPE, target="busybox")
                for tool in ("sh", "cat", "ls", "id", "echo", "test", "pwd", "env")]  # fmt: skip
    members.append(file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                      b"daytona:x:1000:1000::/home/daytona:/bin/sh\n"))  # fmt: skip
    members.append(file("etc/group", b"root:x:0:\ndaytona:x:1000:\n"))
    members.append(file("etc/marker", f"{marker}\n".encode()))
    return layer(members)


def header_bomb(path: Path, size: int, kind: bytes = tarfile.XHDTYPE) -> Path:
    """A tar at ``path`` whose first member is an extended header (pax, or GNU long name
    or link) of ``size`` zero bytes (a hole on disk), then a file ``after``."""
    info = tarfile.TarInfo("././@PaxHeader" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE)
                           else "././@LongLink")  # fmt: skip
    info.type, info.size = kind, size
    after = tarfile.TarInfo("after")
    with path.open("wb") as out:
        out.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        out.seek(size + -size % tarfile.BLOCKSIZE, io.SEEK_CUR)
        out.write(after.tobuf(format=tarfile.USTAR_FORMAT) + bytes(2 * tarfile.BLOCKSIZE))
    return path


class EndlessLayerRegistry:
    """A hostile registry on loopback (plain HTTP): its image's manifest announces one
    layer of 1 KiB, and the layer it sends never ends (random bytes)."""

    def __init__(self) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": "sha256:" + "1" * 64, "size": 1024}  # fmt: skip
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha(config), "size": len(config)},
            "layers": [layer],
        }).encode()  # fmt: skip
        self.served = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith(layer["digest"]):
                    self.send_response(200)
                    self.end_headers()
                    chunk = os.urandom(2**20)
                    with contextlib.suppress(OSError):
                        while True:
                            self.wfile.write(chunk)
                            owner.served += len(chunk)
                    return
                body = {"/v2/": b"{}", "/v2/x/manifests/v1": manifest}.get(self.path)
                if self.path.endswith(_sha(config)):
                    body = config
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                kind = "application/vnd.oci.image.manifest.v1+json" if body is manifest \
                    else "application/json"  # fmt: skip
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EndlessLayerRegistry:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sparse_map_bomb(blocks: int) -> bytes:
    """A tar of one old-GNU sparse member ``f`` of size 0 whose map goes on for ``blocks``
    extended header blocks (21 entries each)."""
    info = tarfile.TarInfo("f")
    info.type = tarfile.GNUTYPE_SPARSE
    head = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    head[482], head[483:495] = 1, b"%011o\0" % 0  # isextended, real size
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    entry = b"%011o\0" % 1000 * 2  # offset, size
    extended = entry * 21 + b"\1" + bytes(7)  # isextended at 504
    return bytes(head) + extended * blocks + bytes(3 * tarfile.BLOCKSIZE)


class HttpServer:
    """An HTTP server on ``bind`` answering GET and HEAD with ``answer``; the paths it
    was asked are in ``asked``."""

    def __init__(self, bind: str, answer: Answer) -> None:
        owner = self
        self.asked: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.asked.append(self.path)
                answer(self)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"{bind}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def secret_service(req: http.server.BaseHTTPRequestHandler) -> None:
    """A service of the host's: answers 404 with :data:`SECRET`, which no tenant may see."""
    body = f'{{"token": "{SECRET}"}}'.encode()
    req.send_response(404)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def redirecting_registry(to: str) -> Answer:
    """A tenant's registry (plain HTTP): every manifest and blob is "moved" to ``to``."""

    def answer(req: http.server.BaseHTTPRequestHandler) -> None:
        if req.path == "/v2/":
            req.send_response(200)
            req.send_header("Content-Length", "0")
        else:
            req.send_response(302)
            req.send_header("Location", f"{to}/latest/meta-data")
            req.send_header("Content-Length", "0")
        req.end_headers()

    return answer


def verbose_registry(size: int) -> Answer:
    """A tenant's registry (plain HTTP) answering every manifest "unknown", with a
    message of ``size`` bytes (skopeo prints all of it, on one line)."""

    def answer(req: http.server.BaseHTTPRequestHandler) -> None:
        if req.path == "/v2/":
            req.send_response(200)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        head = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "'
        req.send_response(404)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(head) + size + 4))
        req.end_headers()
        req.wfile.write(head)
        for _ in range(size // 2**20):
            req.wfile.write(b"M" * 2**20)
        req.wfile.write(b"M" * (size % 2**20) + b'"}]}')

    return answer


def realm_registry(realm: str) -> Answer:
    """A tenant's registry (plain HTTP) whose token service is said to be ``realm``."""

    def answer(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(401)
        req.send_header("WWW-Authenticate", f'Bearer realm="{realm}/token",service="x"')
        req.send_header("Content-Length", "0")
        req.end_headers()

    return answer

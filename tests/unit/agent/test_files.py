"""The files API through the real agent (in process, on the host, in tmp dirs)."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import pytest
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.testclient import TestClient

from cove.agent import agent
from cove.api.routes import toolbox_files
from tests.unit.agent.conftest import AUTH


def _base(sid: str) -> str:
    return f"/toolbox/{sid}/files"


def _upload(client: TestClient, sid: str, files: dict[str, bytes]):
    data = {f"files[{i}].path": path for i, path in enumerate(files)}
    parts = {f"files[{i}].file": (path, body) for i, (path, body) in enumerate(files.items())}
    return client.post(f"{_base(sid)}/bulk-upload", data=data, files=parts, headers=AUTH)


def parse_parts(content_type: str, body: bytes) -> list[dict]:
    """The parts of a multipart body: name, filename, headers and content."""
    _, options = parse_options_header(content_type)
    parts: list[dict] = []
    field, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1]["headers"][bytes(field).decode().lower()] = bytes(value).decode()
        field.clear()
        value.clear()

    def headers_done() -> None:
        _, params = parse_options_header(parts[-1]["headers"]["content-disposition"])
        parts[-1]["name"] = params[b"name"].decode()
        parts[-1]["filename"] = params.get(b"filename", b"").decode()

    parser = MultipartParser(options[b"boundary"], callbacks={
        "on_part_begin": lambda: parts.append({"headers": {}, "body": bytearray()}),
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
        "on_headers_finished": headers_done,
        "on_part_data": lambda d, s, e: parts[-1]["body"].extend(d[s:e]),
    })
    parser.write(body)
    parser.finalize()
    assert body.endswith(b"--" + options[b"boundary"] + b"--\r\n")  # the closing boundary
    return parts


def _download(client: TestClient, sid: str, paths: list[str]) -> list[dict]:
    r = client.post(f"{_base(sid)}/bulk-download", json={"paths": paths}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/form-data; boundary=")
    return parse_parts(r.headers["content-type"], r.content)


def test_upload_then_download_round_trip(client: TestClient, sandbox_id: str,
                                         tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 7)
    files = {str(tmp_path / "new/dirs/blob.bin"): blob, str(tmp_path / "hello.txt"): b"hi\n"}
    r = _upload(client, sandbox_id, files)
    assert r.status_code == 200, r.text
    assert [f["bytes"] for f in r.json()["files"]] == [len(blob), 3]
    assert (tmp_path / "new/dirs/blob.bin").read_bytes() == blob
    assert oct((tmp_path / "hello.txt").stat().st_mode & 0o777) == "0o644"
    assert not list(tmp_path.rglob(".cove-upload-*"))
    parts = _download(client, sandbox_id, list(files))
    assert [(p["name"], p["filename"], bytes(p["body"])) for p in parts] == [
        ("file", path, body) for path, body in files.items()]
    assert parts[0]["headers"]["content-length"] == str(len(blob))


def test_upload_takes_the_destination_from_the_path_field(client: TestClient, sandbox_id: str,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    r = client.post(f"{_base(sandbox_id)}/bulk-upload", data={"files[0].path": str(target)},
                    files={"files[0].file": ("%2Ftmp%2Fdecoy.txt", b"x")}, headers=AUTH)
    assert r.status_code == 200 and target.read_bytes() == b"x"
    assert not Path("/tmp/decoy.txt").exists()


def test_upload_overwrites_and_follows_a_symlink(client: TestClient, sandbox_id: str,
                                                 tmp_path: Path) -> None:
    (tmp_path / "target.txt").write_text("old")
    (tmp_path / "link").symlink_to(tmp_path / "target.txt")
    assert _upload(client, sandbox_id, {str(tmp_path / "link"): b"new"}).status_code == 200
    assert (tmp_path / "target.txt").read_text() == "new" and (tmp_path / "link").is_symlink()


def test_new_files_belong_to_the_sandbox_user(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/sandbox", json={"user": "nobody"}, headers=AUTH)
    sid = r.json()["id"]
    assert _upload(client, sid, {str(tmp_path / "d/e/f.txt"): b"1"}).status_code == 200
    r = client.post(f"{_base(sid)}/folder", params={"path": str(tmp_path / "g/h"), "mode": "700"},
                    headers=AUTH)
    assert r.status_code == 201
    nobody = pwd.getpwnam("nobody").pw_uid
    for created in ("d", "d/e", "d/e/f.txt", "g", "g/h"):
        assert (tmp_path / created).stat().st_uid == nobody, created
    assert oct((tmp_path / "g/h").stat().st_mode & 0o777) == "0o700"


def test_upload_errors(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    r = _upload(client, sandbox_id, {str(tmp_path / "adir"): b"x", str(tmp_path / "ok"): b"y"})
    assert r.status_code == 400
    assert len(r.json()["errors"]) == 1 and "is a directory" in r.json()["errors"][0]
    assert (tmp_path / "ok").read_bytes() == b"y"  # the other file still made it
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files[0].file\"; filename=\"f\"\r\n\r\n"
            b"data\r\n--B\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\n"
            + str(tmp_path / "late").encode() + b"\r\n--B--\r\n")
    r = client.post(f"{_base(sandbox_id)}/bulk-upload", content=body, headers={
        **AUTH, "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400 and "missing .path" in r.json()["errors"][0]
    r = client.post(f"{_base(sandbox_id)}/bulk-upload", json={"x": 1}, headers=AUTH)
    assert r.status_code == 400 and r.json()["errors"] == ["invalid multipart form"]


@pytest.mark.parametrize("part", ["path", "stray"])
def test_an_upload_holds_a_bounded_list_of_names(client: TestClient, sandbox_id: str,
                                                 part: str) -> None:
    """The upload is a stream of any length: what the server keeps of it for its reply
    (the paths named, the errors) is bounded; past that, the upload is refused."""
    name = "x" * 4000  # (a part's headers are short)

    def body():  # noqa: ANN202 - parts for twice what the server may hold
        for i in range(2 * toolbox_files.MAX_HELD // 4000):
            field = f"files[{i}].path" if part == "path" else f"{name}{i}"
            yield (f'--B\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n/tmp/'
                   f"{name}\r\n").encode()
        yield b"--B--\r\n"

    r = client.post(f"{_base(sandbox_id)}/bulk-upload", content=body(), headers={
        **AUTH, "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400
    assert "too many" in r.json()["errors"][-1]
    assert len(r.content) < toolbox_files.MAX_HELD + 100_000


def test_truncated_upload_leaves_nothing(client: TestClient, sandbox_id: str,
                                         tmp_path: Path) -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\n"
            + str(tmp_path / "cut").encode() + b"\r\n--B\r\n"
            b"Content-Disposition: form-data; name=\"files[0].file\"; filename=\"f\"\r\n\r\n"
            + b"x" * 100_000)
    r = client.post(f"{_base(sandbox_id)}/bulk-upload", content=body, headers={
        **AUTH, "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400
    for _ in range(100):  # the agent drops its temporary file once it sees the hang-up
        if sorted(p.name for p in tmp_path.iterdir()) == ["agent.sock", "data"]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"left behind: {list(tmp_path.iterdir())}")


def test_download_errors_are_error_parts(client: TestClient, sandbox_id: str,
                                         tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("ok")
    paths = [str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "f.txt")]
    parts = _download(client, sandbox_id, paths)
    assert [(p["name"], p["filename"]) for p in parts] == [
        ("error", paths[0]), ("error", paths[1]), ("file", paths[2])]
    missing = json.loads(parts[0]["body"])
    assert missing["code"] == "FILE_NOT_FOUND" and missing["statusCode"] == 404
    assert missing["source"] == "DAYTONA_DAEMON" and parts[0]["headers"]["content-type"] == (
        "application/json")
    assert json.loads(parts[1]["body"])["statusCode"] == 400
    r = client.post(f"{_base(sandbox_id)}/bulk-download", json={"paths": []}, headers=AUTH)
    assert r.status_code == 400


def test_download_names_odd_paths_exactly(client: TestClient, sandbox_id: str,
                                          tmp_path: Path) -> None:
    odd = tmp_path / 'naïve "quoted" name.txt'
    odd.write_text("odd")
    r = client.post(f"{_base(sandbox_id)}/bulk-download", json={"paths": [str(odd)]},
                    headers=AUTH)
    disposition = r.content.split(b"\r\n")[1].decode()
    assert "filename*=utf-8''" in disposition
    from urllib.parse import unquote
    assert unquote(disposition.split("filename*=utf-8''")[1]) == str(odd)


def test_paths_reach_the_agent_verbatim(client: TestClient, sandbox_id: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server resolves nothing: '..' and symlinks mean what they mean to the agent,
    which runs inside the sandbox (here: in process, on the host's tmp dir)."""
    seen: list[dict] = []
    agent.load_handlers(("fs_transfer",))  # (loaded at the first fs_read otherwise)
    original = agent.HANDLERS["fs_read"]

    async def recording(request: agent.Request) -> dict | None:
        seen.append(dict(request.message))
        return await original(request)

    monkeypatch.setitem(agent.HANDLERS, "fs_read", recording)
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside/secret").write_text("sandbox's own")
    (tmp_path / "link").symlink_to(tmp_path / "inside/secret")
    escape = f"{tmp_path}/inside/../../{tmp_path.name}/inside/secret"
    parts = _download(client, sandbox_id, [str(tmp_path / "link"), escape])
    assert [bytes(p["body"]) for p in parts] == [b"sandbox's own"] * 2
    assert seen[0]["paths"] == [str(tmp_path / "link"), escape]


def test_list_and_info(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    (tmp_path / "sub/deeper").mkdir(parents=True)
    (tmp_path / "sub/a.txt").write_text("12345")
    r = client.get(_base(sandbox_id), params={"path": str(tmp_path / "sub")}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert [(f["name"], f["isDir"]) for f in r.json()] == [("a.txt", False), ("deeper", True)]
    info = client.get(f"{_base(sandbox_id)}/info", params={"path": str(tmp_path / "sub/a.txt")},
                      headers=AUTH).json()
    assert info["size"] == 5 and info["permissions"] == "0644" and info["mode"] == "-rw-r--r--"
    assert info["owner"] == pwd.getpwuid(os.getuid()).pw_name and info["path"].endswith("a.txt")
    assert {"group", "modTime", "modifiedAt"} <= set(info)
    deep = client.get(_base(sandbox_id), params={"path": str(tmp_path), "depth": 2},
                      headers=AUTH).json()
    assert str(tmp_path / "sub/a.txt") in [f["path"] for f in deep]
    home = client.get(f"{_base(sandbox_id)}/info", params={"path": "."}, headers=AUTH).json()
    assert home["path"] == os.path.expanduser("~")  # relative paths start at the user's home


def test_missing_paths_are_file_not_found(client: TestClient, sandbox_id: str,
                                          tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    calls = [("GET", "", {"path": missing}), ("GET", "/info", {"path": missing}),
             ("DELETE", "", {"path": missing}),
             ("POST", "/move", {"source": missing, "destination": str(tmp_path / "x")}),
             ("POST", "/permissions", {"path": missing, "mode": "600"}),
             ("GET", "/find", {"path": missing, "pattern": "x"}),
             ("GET", "/search", {"path": missing, "pattern": "*"})]
    for method, suffix, params in calls:
        r = client.request(method, f"{_base(sandbox_id)}{suffix}", params=params, headers=AUTH)
        assert r.status_code == 404, (suffix, r.text)
        assert r.json()["code"] == "FILE_NOT_FOUND" and r.json()["source"] == "DAYTONA_DAEMON"


def test_delete(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    (tmp_path / "d/e").mkdir(parents=True)
    (tmp_path / "f").write_text("x")
    url = _base(sandbox_id)
    assert client.delete(url, params={"path": str(tmp_path / "f")}, headers=AUTH).status_code == 204
    r = client.delete(url, params={"path": str(tmp_path / "d")}, headers=AUTH)
    assert r.status_code == 400 and "recursive" in r.json()["message"]
    r = client.delete(url, params={"path": str(tmp_path / "d"), "recursive": "true"}, headers=AUTH)
    assert r.status_code == 204 and not (tmp_path / "d").exists() and not (tmp_path / "f").exists()


def test_move(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    url = f"{_base(sandbox_id)}/move"
    r = client.post(url, params={"source": str(tmp_path / "a"), "destination": str(tmp_path / "b")},
                    headers=AUTH)
    assert r.status_code == 409 and (tmp_path / "b").read_text() == "b"
    r = client.post(url, params={"source": str(tmp_path / "a"), "destination": str(tmp_path / "c")},
                    headers=AUTH)
    assert r.status_code == 200 and (tmp_path / "c").read_text() == "a"
    assert not (tmp_path / "a").exists()


def test_permissions(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    target = tmp_path / "p"
    target.write_text("x")
    url = f"{_base(sandbox_id)}/permissions"
    r = client.post(url, params={"path": str(target), "mode": "640", "owner": "nobody",
                                 "group": "0"}, headers=AUTH)
    assert r.status_code == 200, r.text
    st = target.stat()
    assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == (
        "0o640", pwd.getpwnam("nobody").pw_uid, 0)
    r = client.post(url, params={"path": str(target), "owner": "no-such-user"}, headers=AUTH)
    assert r.status_code == 400
    r = client.post(url, params={"path": str(target), "mode": "99x"}, headers=AUTH)
    assert r.status_code == 400


def test_a_users_symlink_is_followed_only_into_what_it_owns(client: TestClient, sandbox_id: str,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A symlink of a user other than root leads the agent (which may write anything)
    only where that user owns the directory and the file: its links within its own
    files work, one to root's files is refused (the e2e test shows the attack)."""
    user = 4242
    (tmp_path / "rootfile").write_text("root's")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "own.txt").write_text("old")
    links = {"to-root": tmp_path / "rootfile", "to-root-dir": tmp_path, "to-own": mine / "own.txt",
             "to-own-dir": mine / "sub"}  # fmt: skip
    for name, target in links.items():
        (mine / name).symlink_to(target)
    for path in [mine, *mine.iterdir()]:
        os.lchown(path, user, user)
    assert _upload(client, sandbox_id, {str(mine / "to-own"): b"new",
                                        str(mine / "to-own-dir/f"): b"f"}).status_code == 200
    assert (mine / "own.txt").read_text() == "new" and (mine / "sub/f").read_bytes() == b"f"
    r = _upload(client, sandbox_id, {str(mine / "to-root"): b"x"})
    assert r.status_code == 400 and "symbolic link of a user" in r.text, r.text
    url = f"{_base(sandbox_id)}/permissions"
    for path in ("to-root", "to-root-dir/rootfile"):
        r = client.post(url, params={"path": str(mine / path), "mode": "666"}, headers=AUTH)
        assert r.status_code == 403 and r.json()["code"] == "FILE_ACCESS_DENIED", r.text
    r = client.delete(_base(sandbox_id), params={"path": str(mine / "to-root-dir/rootfile")},
                      headers=AUTH)  # fmt: skip
    assert r.status_code == 403
    moving = {"source": str(mine / "own.txt"), "destination": str(mine / "to-root-dir/x")}
    r = client.post(f"{_base(sandbox_id)}/move", params=moving, headers=AUTH)
    assert r.status_code == 403 and (mine / "own.txt").exists() and not (tmp_path / "x").exists()
    st = (tmp_path / "rootfile").stat()
    assert (tmp_path / "rootfile").read_text() == "root's" and (st.st_uid, st.st_mode & 0o777) == (
        0, 0o644)


def test_find_searches_content_and_skips_binaries(client: TestClient, sandbox_id: str,
                                                  tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.py").write_text("import os\nTODO: one\nx = 1\r\nTODO two\n")
    (tmp_path / "src/bin.dat").write_bytes(b"\0TODO")
    r = client.get(f"{_base(sandbox_id)}/find", params={"path": str(tmp_path / "src"),
                                                        "pattern": "TODO"}, headers=AUTH)
    assert r.json() == [
        {"file": str(tmp_path / "src/a.py"), "line": 2, "content": "TODO: one"},
        {"file": str(tmp_path / "src/a.py"), "line": 4, "content": "TODO two"}]


def test_search_matches_names_and_globs(client: TestClient, sandbox_id: str,
                                        tmp_path: Path) -> None:
    for name in ("a.py", "b.txt", "pkg/c.py", "pkg/deep/d.py", "pkg/deep/e.ts"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")

    def search(pattern: str) -> list[str]:
        r = client.get(f"{_base(sandbox_id)}/search", params={"path": str(tmp_path),
                                                              "pattern": pattern}, headers=AUTH)
        assert r.status_code == 200, r.text
        return sorted(os.path.relpath(f, tmp_path) for f in r.json()["files"])

    assert search("*.py") == ["a.py", "pkg/c.py", "pkg/deep/d.py"]
    assert search("pkg/**/*.{py,ts}") == ["pkg/c.py", "pkg/deep/d.py", "pkg/deep/e.ts"]
    assert search("pkg/*.py") == ["pkg/c.py"]
    assert search("[ab].*") == ["a.py", "b.txt"]
    assert search("*.none") == []


def test_replace(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("foo bar foo (.*)\n")
    files = [str(tmp_path / "r.txt"), str(tmp_path / "missing.txt")]
    r = client.post(f"{_base(sandbox_id)}/replace", json={
        "files": files, "pattern": "foo", "newValue": "baz"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json()[0] == {"file": files[0], "success": True, "error": None}
    assert r.json()[1]["success"] is False and "No such file" in r.json()[1]["error"]
    assert (tmp_path / "r.txt").read_text() == "baz bar baz (.*)\n"
    client.post(f"{_base(sandbox_id)}/replace", json={
        "files": files[:1], "pattern": "(.*)", "newValue": "lit"}, headers=AUTH)
    assert (tmp_path / "r.txt").read_text() == "baz bar baz lit\n"  # a literal, not a regex


def test_files_need_a_started_sandbox(client: TestClient, sandbox_id: str) -> None:
    client.post(f"/api/sandbox/{sandbox_id}/stop", headers=AUTH)
    r = client.get(f"{_base(sandbox_id)}/info", params={"path": "/"}, headers=AUTH)
    assert r.status_code == 400
    r = client.post(f"{_base(sandbox_id)}/bulk-download", json={"paths": ["/"]}, headers=AUTH)
    assert r.status_code == 400

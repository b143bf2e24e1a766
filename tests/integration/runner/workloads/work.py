"""Python inside a sandbox: threads, asyncio, subprocess, multiprocessing, sockets, ctypes."""

import asyncio
import concurrent.futures
import ctypes
import multiprocessing
import os
import socket
import subprocess
import threading
from multiprocessing import shared_memory


def square(x: int) -> int:
    return x * x


async def network_and_children() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"hi\n")
    assert await reader.readline() == b"hi\n"
    writer.close()
    server.close()
    await server.wait_closed()
    child = await asyncio.create_subprocess_exec("echo", "sub", stdout=asyncio.subprocess.PIPE)
    assert (await child.communicate())[0] == b"sub\n"


def sockets() -> None:
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    client = socket.create_connection(server.getsockname()[:2])
    conn, _ = server.accept()
    client.sendall(b"x")
    assert conn.recv(1) == b"x"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.sendto(b"d", udp.getsockname())
    assert udp.recv(1) == b"d"
    left, right = socket.socketpair()
    left.sendall(b"p")
    assert right.recv(1) == b"p"
    assert socket.if_nameindex()  # netlink
    assert socket.getaddrinfo("localhost", 80)
    path = f"/tmp/work-{os.getpid()}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen()
    os.unlink(path)


def ctypes_calls() -> None:
    libc = ctypes.CDLL(None)
    assert libc.getpid() == os.getpid()
    compare = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.POINTER(ctypes.c_int)] * 2)
    numbers = (ctypes.c_int * 3)(3, 1, 2)
    libc.qsort(numbers, 3, ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))
    assert list(numbers) == [1, 2, 3]


def main() -> None:
    seen: list[int] = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(8))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(square, range(10))) == 285
    asyncio.run(network_and_children())
    assert subprocess.run(["sh", "-c", "exit 3"]).returncode == 3
    for method in ("fork", "spawn", "forkserver"):
        context = multiprocessing.get_context(method)
        with context.Pool(2) as pool:
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        queue, lock = context.Queue(), context.Lock()
        with lock:
            queue.put(method)
        assert queue.get(timeout=30) == method
    shm = shared_memory.SharedMemory(create=True, size=64)
    shm.buf[0] = 7
    shm.close()
    shm.unlink()
    sockets()
    ctypes_calls()
    print("python ok")


if __name__ == "__main__":
    main()

"""MmsgIO, the batched recvmmsg/sendmmsg edge, on loopback UDP sockets (no root needed)."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator

import pytest

from alt_router.gre.userspace import MmsgIO


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        yield a, b
    finally:
        a.close()
        b.close()


def drain(sock: socket.socket, want: int, deadline: float = 5.0) -> list[bytes]:
    got: list[bytes] = []
    end = time.monotonic() + deadline
    while len(got) < want and time.monotonic() < end:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            time.sleep(0.001)
    return got


def recv_all(mm: MmsgIO, want: int, deadline: float = 5.0) -> list[list[bytes]]:
    batches: list[list[bytes]] = []
    end = time.monotonic() + deadline
    while sum(map(len, batches)) < want and time.monotonic() < end:
        batch = mm.recv()
        if batch:
            batches.append(batch)
        else:
            time.sleep(0.001)
    return batches


def test_receives_in_batches_and_then_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mm = MmsgIO(a.fileno(), batch=4, slot=2048, tx_slot=2048)
    sent = [bytes([i]) * (i + 1) for i in range(6)]
    for payload in sent:
        b.sendto(payload, a.getsockname())
    batches = recv_all(mm, 6)
    assert [p for batch in batches for p in batch] == sent
    assert all(len(batch) <= 4 for batch in batches)
    assert mm.recv() == []


def test_sends_a_batch_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mm = MmsgIO(a.fileno(), batch=4, slot=2048, tx_slot=2048)
    for i in range(3):
        mm.queue(f"t{i}", b"head", bytes([i]) * 10, b.getsockname())
    assert not mm.full
    assert mm.flush() == []
    assert drain(b, 3) == [b"head" + bytes([i]) * 10 for i in range(3)]
    assert mm.pending == []


def test_a_refused_packet_is_reported_and_the_rest_go(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mm = MmsgIO(a.fileno(), batch=4, slot=2048, tx_slot=2048)
    mm.queue("ok1", b"", b"first", b.getsockname())
    mm.queue("bad", b"", b"broadcast", ("255.255.255.255", 9))  # EACCES without SO_BROADCAST
    mm.queue("ok2", b"", b"third", b.getsockname())
    failed = mm.flush()
    assert [(tag, data, exc.errno) for tag, data, exc in failed] == [("bad", b"broadcast", errno.EACCES)]
    assert drain(b, 2) == [b"first", b"third"]


def test_refuses_oversize_and_overfull(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mm = MmsgIO(a.fileno(), batch=2, slot=2048, tx_slot=100)
    with pytest.raises(OSError, match="slot"):
        mm.queue("t", b"h" * 20, bytes(81), b.getsockname())
    mm.queue("t", b"", b"1", b.getsockname())
    mm.queue("t", b"", b"2", b.getsockname())
    assert mm.full
    with pytest.raises(OSError) as info:
        mm.queue("t", b"", b"3", b.getsockname())
    assert info.value.errno == errno.ENOBUFS
    assert mm.flush() == []
    assert drain(b, 2) == [b"1", b"2"]


def test_receive_error_other_than_eagain_is_raised() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mm = MmsgIO(s.fileno(), batch=2, slot=64, tx_slot=64)
    s.close()
    with pytest.raises(OSError) as info:
        mm.recv()
    assert info.value.errno == errno.EBADF


def test_a_read_into_a_slot_goes_out_behind_its_header(pair: tuple[socket.socket, socket.socket]) -> None:
    # The TUN -> underlay path of the FRR-integrated mode: os.readv straight into the send slot.
    a, b = pair
    src_a, src_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        mm = MmsgIO(a.fileno(), batch=4, slot=2048, tx_slot=64)
        for i in range(3):
            src_a.send(bytes([i]) * (10 + i))
            size = os.readv(src_b.fileno(), mm.room(4))
            mm.commit(f"t{i}", b"HEAD", size, b.getsockname())
        assert len(mm.pending) == 3
        assert mm.flush() == []
        assert drain(b, 3) == [b"HEAD" + bytes([i]) * (10 + i) for i in range(3)]
    finally:
        src_a.close()
        src_b.close()


def test_a_refused_slot_comes_back_without_its_header(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mm = MmsgIO(a.fileno(), batch=4, slot=2048, tx_slot=64)
    room = mm.room(3)[0]
    room[:5] = b"inner"
    mm.commit("bad", b"HDR", 5, ("255.255.255.255", 9))  # EACCES without SO_BROADCAST
    mm.queue("ok", b"", b"fine", b.getsockname())
    failed = mm.flush()
    assert [(tag, data, exc.errno) for tag, data, exc in failed] == [("bad", b"inner", errno.EACCES)]
    assert drain(b, 1) == [b"fine"]

"""cwhost's guest service on its own: its frames, who it answers, and what a connection's end does.
The API's tests (test_processes, test_guest_fs) use it through the fake driver; the real-VM test
runs it in a guest, as the guest user."""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from drivers.guest_service import frames
from drivers.guest_service.client import GuestService, GuestServiceRefused, GuestServiceUnavailable
from drivers.guest_service.server import GuestServer, Place, SimulatedServer, local_socket_path


def test_frames_are_read_whole_from_any_pieces():
    stream = frames.encode(frames.JSON, b'{"op":"stat"}') + frames.encode(frames.DATA, b"x" * 70000)
    stream += frames.encode(frames.END)
    for size in (1, 7, 4096):
        parser, found = frames.Parser(), []
        for start in range(0, len(stream), size):
            found.extend(parser.feed(stream[start : start + size]))
        assert found == [(frames.JSON, b'{"op":"stat"}'), (frames.DATA, b"x" * 70000), (frames.END, b"")]
    with pytest.raises(frames.ProtocolError):
        frames.Parser().feed(b"Q\x00\x00\x00\x01x")
    with pytest.raises(frames.ProtocolError):
        frames.Parser().feed(frames.HEADER.pack(frames.DATA, frames.MAX_PAYLOAD + 1))


def test_a_simulated_guests_paths_stay_under_its_root():
    place = Place(home="/home/dev", root="/srv/fake/root", simulated=True)
    assert place.local("notes.txt") == "/srv/fake/root/home/dev/notes.txt"
    assert place.local("/../../etc/passwd") == "/srv/fake/root/etc/passwd"
    assert place.local("../../../../etc") == "/srv/fake/root/etc"
    assert place.shown("/srv/fake/root/home/dev/.hidden") == "/home/dev/.hidden"
    assert place.shown("/srv/fake/root") == "/"


@pytest.fixture
def simulated(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with local_socket_path(str(tmp_path)) as path:
        server = SimulatedServer(path, str(root))
    server.parent_pid = __import__("os").getppid()  # the check passes for this process's children
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    def connect():
        sock = socket.socket(socket.AF_UNIX)
        with local_socket_path(str(tmp_path)) as path:
            sock.connect(path)
        return sock

    yield GuestService(connect, "dev"), root
    server.shutdown()
    server.server_close()


def test_a_host_that_goes_away_kills_the_process_and_all_it_started(simulated):
    service, _ = simulated
    pid, connection = service.spawn({"command": ["sleep", "300"]})
    assert psutil.pid_exists(pid)
    connection.close()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the process outlived its connection"
        time.sleep(0.05)


def test_a_write_cut_short_leaves_nothing(simulated):
    service, root = simulated
    connection = service.open("write", path="half.txt", maxBytes=1000)
    assert connection.answer() == {"accepted": True}
    connection.send(frames.DATA, b"half of it")
    connection.close()  # no END: the host went away
    time.sleep(0.5)
    assert list((root / "home" / "dev").iterdir()) == []
    with pytest.raises(GuestServiceRefused) as refused:
        service.call("stat", path="half.txt")
    assert refused.value.code == "not_found"


def test_a_speaker_is_recorded_in_the_rates_asked_and_its_recorder_ends_with_the_connection(simulated):
    service, _ = simulated
    for rate, channels in ((True, 1), (16000, True), (44100, 1), (16000, 3), ("16000", 1)):
        with pytest.raises(GuestServiceRefused) as refused:
            service.record_speaker(rate, channels, 5)
        assert refused.value.code == "invalid", (rate, channels)
    recorder, connection = service.record_speaker(48000, 2, 5)
    heard = b""
    while len(heard) < 48000 * 2 * 2 // 5:  # a fifth of a second of stereo samples
        kind, payload = connection.frame()
        assert kind == frames.STDOUT
        heard += payload
    assert set(heard) == {0}  # nothing plays: silence, sent all the same
    connection.close()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(recorder) and psutil.Process(recorder).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the recorder outlived its connection"
        time.sleep(0.05)


def test_garbage_is_refused_and_the_service_goes_on(simulated):
    service, _ = simulated
    sock = service.connect()
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert frames.Reader(sock).next_json()["error"]["code"] == "invalid"
    sock.close()
    with pytest.raises(GuestServiceRefused):
        service.call("no-such-operation", path="x")
    assert service.call("stat", path="/")["entry"]["type"] == "directory"


def test_in_a_guest_it_answers_the_hosts_address_alone(tmp_path):
    peer_file = tmp_path / "host-address"
    peer_file.write_text("10.255.255.1\n")  # not this test's address
    server = GuestServer(0, str(peer_file))
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        refused = GuestService(lambda: socket.create_connection(("127.0.0.1", port), timeout=5), "nobody")
        with pytest.raises(GuestServiceUnavailable):
            refused.call("stat", path="/")
        peer_file.write_text("127.0.0.1\n")
        # Now the peer is the host: the request is taken, and refused only because no such user exists.
        with pytest.raises(GuestServiceRefused) as answered:
            refused.call("stat", path="/", user="no-such-user-here")
        assert answered.value.code == "invalid"
        # Nothing runs as root, whoever asks.
        with pytest.raises(GuestServiceRefused) as as_root:
            refused.call("stat", path="/", user="root")
        assert "root" in str(as_root.value)
    finally:
        server.shutdown()
        server.server_close()

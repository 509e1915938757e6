"""Hostile clients for Weft's hardening tests (tests/mesh/hostile.rs). Each prints one JSON line
of what it saw; times are milliseconds from its first byte sent.

raw HOST PORT FILE [WAIT]      send FILE's bytes, read until closed or WAIT s (default 5):
                               {"statuses": [...], "closed": bool, "ms": ..., "text": ...}
slowloris HOST PORT EVERY MAX  a request head trickled one byte every EVERY s, for up to MAX s
endless-body HOST PORT MAX     a POST that promises 1 MB and sends 10 bytes; its answer
tls-partial HOST PORT MAX      the first 105 bytes of a 517-byte ClientHello, then nothing
h2-rapid-reset HOST PORT N     h2c: N streams, each HEADERS then RST_STREAM(CANCEL) at once
h2-slow-reset HOST PORT N PATH h2c: N streams for PATH, each reset 2 ms after its HEADERS
h2-settings-flood HOST PORT N MAX   h2c: N SETTINGS frames, never reading the ACKs
idle HOST PORT N HOLD MARK     N connections that send nothing, held HOLD s; MARK is written
                               once they are open
fake-xds ADDR MODE             a control plane on ADDR whose ADS streams answer the first
                               request with MODE: garbage (bytes that are no DiscoveryResponse)
                               or huge (a 100 MB DiscoveryResponse); the CA is not served
"""
import errno
import json
import resource
import socket
import struct
import sys
import time

T0 = [0.0]
# When the first byte came back (ms), set by read_all.
FIRST = [None]


def ms():
    return int((time.monotonic() - T0[0]) * 1000)


def connect(host, port, timeout=10):
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    T0[0] = time.monotonic()
    return s


def read_all(s, wait):
    """Reads until the peer closes or `wait` seconds pass; (bytes, closed, ms at close)."""
    data = b""
    deadline = time.monotonic() + wait
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, True, ms()
        if not chunk:
            return data, True, ms()
        if FIRST[0] is None:
            FIRST[0] = ms()
        data += chunk
    return data, False, None


def statuses(data):
    out = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1."):
            parts = line.split(b" ")
            if len(parts) > 1 and parts[1].isdigit():
                out.append(int(parts[1]))
    return out


def report(**kw):
    print(json.dumps(kw), flush=True)


def raw(host, port, path, wait="5"):
    payload = open(path, "rb").read()
    s = connect(host, port)
    try:
        s.sendall(payload)
    except (ConnectionResetError, BrokenPipeError) as e:
        # Refused part way: what came back still counts.
        report(statuses=[], closed=True, ms=ms(), text="send: %s" % e)
        return
    data, closed, at = read_all(s, float(wait))
    report(statuses=statuses(data), closed=closed, ms=at,
           text=data[:400].decode("latin-1"))


def slowloris(host, port, every, limit):
    s = connect(host, port)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: server\r\n")
    head = b"X-Slow: " + b"a" * 10000
    sent = 0
    s.settimeout(float(every))
    deadline = time.monotonic() + float(limit)
    while time.monotonic() < deadline:
        try:
            s.send(head[sent:sent + 1])
            sent += 1
        except (ConnectionResetError, BrokenPipeError):
            report(closed=True, ms=ms(), bytes=sent, statuses=[])
            return
        try:
            chunk = s.recv(65536)
            if not chunk:
                report(closed=True, ms=ms(), bytes=sent, statuses=[])
                return
            data, closed, at = read_all(s, 1)
            report(closed=True, ms=ms(), bytes=sent, statuses=statuses(chunk + data))
            return
        except socket.timeout:
            pass
        except ConnectionResetError:
            report(closed=True, ms=ms(), bytes=sent, statuses=[])
            return
    report(closed=False, ms=None, bytes=sent, statuses=[])


def endless_body(host, port, limit):
    s = connect(host, port)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: server\r\nContent-Length: 1000000\r\n\r\n0123456789")
    data, closed, at = read_all(s, float(limit))
    report(statuses=statuses(data), closed=closed, ms=at if closed else ms(),
           answered_ms=FIRST[0], text=data[:400].decode("latin-1"))


def tls_partial(host, port, limit):
    s = connect(host, port)
    # A handshake record of 512 bytes announced: a ClientHello (type 1) of 508 bytes.
    record = b"\x16\x03\x01" + struct.pack(">H", 512)
    hello = b"\x01" + struct.pack(">I", 508)[1:] + b"\x03\x03" + b"\x00" * 96
    s.sendall(record + hello)
    data, closed, at = read_all(s, float(limit))
    report(closed=closed, ms=at, bytes_back=len(data))


# --- HTTP/2 by hand -------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings():
    return frame(4, 0, 0)


def literal(index, value):
    """HPACK literal without indexing, name from the static table."""
    v = value.encode()
    return bytes([index]) + bytes([len(v)]) + v


def headers(stream, path="/"):
    # :method GET (2), :scheme http (6), :path (4), :authority (1).
    block = b"\x82\x86" + literal(4, path) + literal(1, "server")
    return frame(1, 0x1 | 0x4, stream, block)


def rst(stream):
    return frame(3, 0, stream, struct.pack(">I", 8))


def goaway_in(data):
    """The error code of the first GOAWAY among the frames of `data`, if any."""
    i = 0
    while i + 9 <= len(data):
        length = struct.unpack(">I", b"\x00" + data[i:i + 3])[0]
        kind = data[i + 3]
        if kind == 7 and i + 9 + 8 <= len(data):
            return struct.unpack(">I", data[i + 13:i + 17])[0]
        i += 9 + length
    return None


def h2_open(host, port):
    s = connect(host, port)
    s.sendall(PREFACE + settings())
    return s


def h2_rapid_reset(host, port, n):
    s = h2_open(host, port)
    n = int(n)
    sent = 0
    batch = 50
    closed = False
    try:
        for first in range(0, n, batch):
            chunk = b""
            for i in range(first, min(n, first + batch)):
                sid = 2 * i + 1
                chunk += headers(sid) + rst(sid)
            s.sendall(chunk)
            sent = min(n, first + batch)
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    data, c, at = read_all(s, 5)
    report(sent=sent, goaway=goaway_in(data), closed=closed or c, ms=at if c else ms())


def h2_slow_reset(host, port, n, path):
    s = h2_open(host, port)
    n = int(n)
    sent = 0
    data = b""
    closed = False
    s.settimeout(0.002)
    for i in range(n):
        sid = 2 * i + 1
        try:
            s.sendall(headers(sid, path))
            try:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
            except socket.timeout:
                pass
            s.sendall(rst(sid))
            sent += 1
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if goaway_in(data) is not None:
            break
    more, c, at = read_all(s, 5)
    data += more
    report(sent=sent, goaway=goaway_in(data), closed=closed or c, ms=ms())


def h2_settings_flood(host, port, n, limit):
    s = h2_open(host, port)
    s.setblocking(False)
    n = int(n)
    one = settings()
    queued = 0
    sent = 0
    buf = b""
    blocked_at = None
    deadline = time.monotonic() + float(limit)
    while time.monotonic() < deadline:
        if not buf:
            # The flood, then one more frame now and then (a send is how a close shows).
            k = min(1000, n - queued) if queued < n else 1
            buf = one * k
            queued += k
        try:
            k = s.send(buf)
            sent += k
            buf = buf[k:]
            if queued < n:
                continue
        except BlockingIOError:
            if blocked_at is None:
                blocked_at = ms()
        except (ConnectionResetError, BrokenPipeError):
            report(frames=sent // len(one), blocked_ms=blocked_at, closed=True, ms=ms())
            return
        time.sleep(0.05)
    report(frames=sent // len(one), blocked_ms=blocked_at, closed=False, ms=None)


def idle(host, port, n, hold, mark):
    n = int(n)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    conns = []
    T0[0] = time.monotonic()
    for _ in range(n):
        c = socket.create_connection((host, int(port)), timeout=10)
        conns.append(c)
    opened_ms = ms()
    open(mark, "w").write(str(len(conns)))
    time.sleep(float(hold))
    still = 0
    for c in conns:
        c.setblocking(False)
        try:
            if c.recv(1, socket.MSG_PEEK):
                still += 1
        except BlockingIOError:
            still += 1
        except OSError:
            pass
    report(opened=len(conns), opened_ms=opened_ms, open_after=still)


def fake_xds(addr, mode):
    from concurrent import futures

    import grpc

    if mode == "garbage":
        # A string field whose length runs past the end of the message.
        answer = b"\x0a\xff\xff\x03garbage"
    else:
        n = 100 * 1024 * 1024
        size = b""
        while True:
            byte = n & 0x7F
            n >>= 7
            size += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        answer = b"\x0a" + size + b"v" * (100 * 1024 * 1024)

    def ads(requests, context):
        next(requests, None)
        print("answered an ADS stream with %s" % mode, flush=True)
        yield answer
        time.sleep(30)

    handler = grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(ads)},
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(16),
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    server.start()
    server.wait_for_termination()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    fns = {
        "raw": raw,
        "slowloris": slowloris,
        "endless-body": endless_body,
        "tls-partial": tls_partial,
        "h2-rapid-reset": h2_rapid_reset,
        "h2-slow-reset": h2_slow_reset,
        "h2-settings-flood": h2_settings_flood,
        "idle": idle,
        "fake-xds": fake_xds,
    }
    fns[cmd](*args)


if __name__ == "__main__":
    main()

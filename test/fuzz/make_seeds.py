#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into test/fuzz/corpus/<target>/.

    python3 test/fuzz/make_seeds.py

Each seed is a small, meaningful input in the format its target reads (see
the comment at the top of test/fuzz/fuzz_<target>.c). The output is
deterministic, so rerunning it changes nothing unless this script changed.
Seeds are written, never deleted: remove stale ones by hand.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- rpc_frames ---------------------------------------------------------

def header(type_, method_len, call_id, status, body_len, magic=b"NRPC", version=1):
    return magic + struct.pack(">BBHQII", version, type_, method_len, call_id, status, body_len)


def request(call_id, method, body):
    return header(1, len(method), call_id, 0, len(body)) + method + body


def response(call_id, status, body):
    return header(2, 0, call_id, status, len(body)) + body


def stream(data, sizes=(), max_frame=0):
    """Stream mode: byte 0 even, max_frame, chunk sizes, then the stream."""
    return bytes([0]) + struct.pack(">HB", max_frame, len(sizes)) + bytes(sizes) + data


def spec_request(call_id, method, body, flags=0, method_len=None):
    n = len(method) if method_len is None else method_len
    return struct.pack(">BQBH", flags, call_id, n & 0xFF, len(body)) + method + body


def spec_response(call_id, status, body, flags=1):
    return struct.pack(">BQIH", flags, call_id, status, len(body)) + body


def rpc_frames_seeds():
    echo = request(1, b"echo", b"hi")                 # docs/protocol.md section 9
    ok = response(1, 0, b"hi")
    nope = request(2, b"nope", b"")
    unknown = response(2, 1, b"unknown method")
    write("rpc_frames", "request_whole", stream(echo))
    write("rpc_frames", "response_split", stream(ok, (1, 5, 7)))
    write("rpc_frames", "pipelined", stream(echo + nope + echo, (10, 3)))
    write("rpc_frames", "responses_bytewise", stream(ok + unknown, (1,)))
    write("rpc_frames", "empty_chunks", stream(echo, (0, 4, 0, 30)))
    write("rpc_frames", "partial_body", stream(echo[:27], (24,)))
    write("rpc_frames", "partial_header", stream(echo[:13], (2,)))
    write("rpc_frames", "bad_magic_http", stream(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", (1,)))
    write("rpc_frames", "bad_magic_after_frame", stream(echo + b"NRPX" + echo[4:], (7,)))
    write("rpc_frames", "bad_version", stream(header(1, 4, 1, 0, 0, version=2) + b"echo"))
    write("rpc_frames", "bad_type", stream(header(3, 0, 1, 0, 0), (5, 1)))
    write("rpc_frames", "request_method_len_0", stream(header(1, 0, 1, 0, 0)))
    write("rpc_frames", "request_method_len_256", stream(header(1, 256, 1, 0, 0), (7, 1)))
    write("rpc_frames", "response_with_method", stream(header(2, 1, 1, 0, 0) + b"x"))
    write("rpc_frames", "request_with_status", stream(header(1, 4, 1, 5, 0) + b"echo", (19, 1)))
    write("rpc_frames", "request_status_split",
          stream(header(1, 4, 1, 0x01000000, 0) + b"echo", (17, 1, 1, 1)))
    write("rpc_frames", "response_local_status", stream(header(2, 0, 1, 0xFFFFFF01, 0), (20,)))
    write("rpc_frames", "huge_body_len", stream(header(1, 4, 9, 0, 0xFFFFFFFF) + b"echo", (23, 1)))
    write("rpc_frames", "at_limit", stream(echo + echo, (30,), max_frame=30))
    write("rpc_frames", "over_limit", stream(echo, (29, 1), max_frame=29))
    write("rpc_frames", "limit_below_header", stream(ok, (), max_frame=10))

    rt = bytes([1])
    write("rpc_frames", "roundtrip_echo",
          rt + spec_request(1, b"echo", b"hi") + spec_response(1, 0, b"hi"))
    write("rpc_frames", "roundtrip_errors",
          rt + spec_request(2, b"nope", b"") + spec_response(2, 1, b"unknown method")
          + spec_response(3, 100, b"app") + spec_response(0xFFFFFFFFFFFFFFFF, 0xFFFFFEFF, b""))
    write("rpc_frames", "roundtrip_invalid",
          rt + spec_request(4, b"", b"x", method_len=0)
          + spec_request(5, b"m", b"", flags=8)          # method_len 257
          + spec_response(6, 0xFFFFFF01, b"")            # local-only status
          + spec_request(7, b"m", b"", flags=2)          # NULL body, empty: fine
          + spec_response(8, 0, b"", flags=3)            # NULL body, empty: fine
          + spec_request(9, b"m", b"", flags=4))         # NULL method
    write("rpc_frames", "roundtrip_long_method",
          rt + spec_request(10, b"m" * 255, b"body") + spec_request(11, b"k.v", b"z" * 300))


# ---- buffer ---------------------------------------------------------------

(APPEND, APPEND_BIG, PREPEND, RETRIEVE, FIND, RETRIEVE_UNTIL, RETRIEVE_ALL,
 RETRIEVE_AS_STRING, PEEK_READ_INT, PUT_INT, ENSURE, SHRINK, RELEASE, DESTROY,
 WRITE_COMMIT, READ_FD) = range(16)


def op_append(data):
    return bytes([APPEND, len(data)]) + data


def buffer_seeds():
    lines = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n"
    write("buffer", "http_lines",
          op_append(lines)
          + bytes([FIND, 1, 0, 0, FIND, 0, 0, 5])
          + bytes([RETRIEVE_UNTIL, 1, RETRIEVE_UNTIL, 1, RETRIEVE_UNTIL, 1])
          + bytes([RETRIEVE_UNTIL, 0, RETRIEVE_UNTIL, 2, RETRIEVE_UNTIL, 0]))
    write("buffer", "length_prefix",
          op_append(b"payload")
          + bytes([PUT_INT, 4 | 2]) + struct.pack(">Q", 7)          # prepend u32
          + bytes([PUT_INT, 4 | 2]) + struct.pack(">Q", 1)          # prepend u32: ENOSPC
          + bytes([PEEK_READ_INT, 2, PEEK_READ_INT, 4 | 2])         # peek, read u32
          + bytes([PUT_INT, 3]) + struct.pack(">Q", 0x0102030405060708)
          + bytes([RETRIEVE_AS_STRING, 7, 8, PEEK_READ_INT, 4 | 3, PEEK_READ_INT, 4 | 3]))
    write("buffer", "growth_and_compaction",
          bytes([APPEND_BIG, 0x03, 0xE8, 1, RETRIEVE, 0x01, 0xF4])  # 1000 in, 500 out
          + bytes([ENSURE, 0, 0x01, 0x90])                           # 400: compacts
          + bytes([ENSURE, 0, 0x10, 0x00])                           # 4096: grows
          + bytes([SHRINK, 0, 0, 0, RELEASE, RETRIEVE_ALL, RELEASE])
          + bytes([APPEND_BIG, 0xFF, 0xFF, 9, SHRINK, 0, 0, 16, DESTROY]))
    write("buffer", "small_appends_grow",
          b"".join(op_append(bytes([65 + i]) * 100) for i in range(6))
          + bytes([RETRIEVE, 0, 250]) + op_append(b"z" * 200))
    write("buffer", "prepend_fresh",
          bytes([PREPEND, 8, PREPEND, 1, RETRIEVE_ALL, PREPEND, 9, RELEASE, PREPEND, 3]))
    write("buffer", "read_fd",
          bytes([READ_FD, 0, 100, 7, READ_FD, 0, 0, 0, READ_FD, 0xFF, 0xFF, 3])
          + bytes([RETRIEVE, 0xFF, 0xFF, READ_FD, 0x10, 0x00, 1]))
    write("buffer", "impossible_sizes",
          bytes([ENSURE, 0x80, ENSURE, 0x81, ENSURE, 0x82, SHRINK, 0x81])
          + op_append(b"abc") + bytes([ENSURE, 0x82, SHRINK, 0x80, SHRINK, 0x82]))
    write("buffer", "write_commit",
          bytes([WRITE_COMMIT, 0, 10, 1, ENSURE, 0, 0, 64, WRITE_COMMIT, 0, 10, 1])
          + bytes([WRITE_COMMIT, 0x03, 0xFF, 2, RETRIEVE_AS_STRING, 10, 10])
          + bytes([RETRIEVE_AS_STRING, 10, 11, RETRIEVE_AS_STRING, 200, 255]))


# ---- addr -------------------------------------------------------------------

def addr_seeds():
    texts = {
        "ipv4": "127.0.0.1:80",
        "ipv4_any": "*:0",
        "localhost": "LocalHost:65535",
        "ipv4_leading_zero_port": "10.0.0.1:00080",
        "ipv6_loopback": "[::1]:8080",
        "ipv6_any": "[::]:1",
        "ipv6_mapped": "[::ffff:1.2.3.4]:443",
        "ipv6_scope_index": "[fe80::1%2]:22",
        "ipv6_scope_name": "[fe80::1%lo]:22",
        "unix_path": "unix:/tmp/x",
        "unix_relative": "unix:run/x.sock",
        "unix_path_at": "unix:./@x",
        "unix_abstract": "unix:@name",
        "unix_abstract_escapes": "unix:@a\\0b\\\\c",
        "unix_path_max": "unix:/" + "p" * 106,
        "unix_path_too_long": "unix:/" + "p" * 107,
        "bad_ipv4_three_parts": "1.2.3:80",
        "bad_port": "1.2.3.4:65536",
        "bad_ipv6_no_brackets": "::1:80",
        "bad_unix_empty": "unix:",
        "bad_abstract_empty": "unix:@",
        "bad_escape": "unix:@a\\n",
        "bad_scope": "[fe80::1%nosuchif0]:1",
        "garbage": "garbage",
        "empty": "",
    }
    for name, text in texts.items():
        write("addr", name, text.encode())


if __name__ == "__main__":
    rpc_frames_seeds()
    buffer_seeds()
    addr_seeds()

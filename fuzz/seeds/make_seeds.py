#!/usr/bin/env python3
"""Writes the seed corpora of the agent's fuzz targets from real inputs.

Run from anywhere: `python3 fuzz/seeds/make_seeds.py` (reads this machine's /proc and
/sys/kernel/btf/vmlinux, so run it on a Linux host with BTF). Re-running it rewrites every
seed it owns and leaves the other targets' directories alone.

- traceparent: values real tracers send (W3C spec examples, OpenTelemetry SDK and grpc-go
  shapes) and near misses.
- config: the rendered DaemonSet configs (deploy/manifests/*/agent.yaml), the quickstart
  example and the integration tests' shapes, with the DaemonSet's environment on top.
- ring_records: the recorded connections of mop-protocol/tests/fixtures/http1/*.seg (real
  nginx, Python and curl traffic) turned into the records the kernel side would write for
  them: ConnOpen, one Data record per recorded write with a 256-byte head, the uncaptured
  gap and a 16-byte tail as emit.rs cuts them, then ConnClose.
- btf: this kernel's BTF cut down to the structs the loader resolves (with their real member
  offsets, anonymous unions included).
- procfs: /proc/self/stat, /proc/net/tcp and /proc/net/tcp6 of this machine.
"""

import pathlib
import struct

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def write(target, name, data):
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)


# --- traceparent -----------------------------------------------------------------------------

TRACEPARENTS = {
    "w3c-sampled": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "w3c-unsampled": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00",
    "future-version": "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-will-be-like",
    "upper-case": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
    "padded": "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
    "zero-trace": "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "version-ff": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "short-span": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
}


def traceparent():
    for name, value in TRACEPARENTS.items():
        write("traceparent", name, value.encode())


# --- config ----------------------------------------------------------------------------------

DAEMONSET_ENV = "KUBE_NODE_NAME=node-1\nOTEL_EBPF_KUBE_METADATA_ENABLE=true\nOTEL_EBPF_LOG_LEVEL=info\n"

TEST_CONFIGS = {
    "itest-ports": (
        "",
        'trace_printer: json\nroutes:\n  unmatched: unset\ndiscovery:\n  instrument:\n'
        '    - open_ports: "8080,9000-9100"\n',
    ),
    "itest-curl": ("", 'trace_printer: json\ndiscovery:\n  instrument:\n    - exe_path: "*/curl"\n'),
    "otlp-env": (
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318\nOTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n"
        "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer x,tenant=a\nOTEL_BSP_SCHEDULE_DELAY=200\n",
        "ebpf:\n  buffer_sizes:\n    http: 1024\n  ring_buffer_size: 65536\n  max_connections: 128\n"
        "routes:\n  patterns:\n    - /users/{id}\n  ignored_patterns:\n    - /health\n",
    ),
    "substitution": ("PORT=8080\n", 'discovery:\n  instrument:\n    - open_ports: "${PORT}"\n'),
}


def config():
    for env in ["default", "production"]:
        for doc in yaml.safe_load_all((ROOT / f"deploy/manifests/{env}/agent.yaml").read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                for text in doc["data"].values():
                    write("config", f"daemonset-{env}", f"{DAEMONSET_ENV}\0{text}".encode())
    write("config", "quickstart", b"\0" + (ROOT / "examples/quickstart.yaml").read_bytes())
    for name, (env, text) in TEST_CONFIGS.items():
        write("config", name, f"{env}\0{text}".encode())


# --- ring_records ----------------------------------------------------------------------------

HEADER = struct.Struct("<IIQQIIiIQ16s16sHHHHIIQII16s")
assert HEADER.size == 128
KIND_OPEN, KIND_DATA, KIND_CLOSE = 1, 2, 3
DIR_INGRESS, DIR_EGRESS = 0, 1
ROLE_SERVER, ROLE_CLIENT = 1, 2
AF_INET = 2
WINDOW, TAIL = 256, 16


def fixture(path):
    data, out = path.read_bytes(), []
    while data:
        nl = data.index(b"\n")
        direction, length = data[:nl].decode().split(" ")
        length = int(length)
        out.append((direction == ">", data[nl + 1 : nl + 1 + length]))
        data = data[nl + 2 + length :]
    return out


def record(kind, t, direction=0, role=ROLE_SERVER, payload=b"", pid=4242, conn=7):
    head = payload[:WINDOW]
    rest = len(payload) - len(head)
    tail = payload[-min(TAIL, rest) :] if rest else b""
    local = bytes([127, 0, 0, 1]) + bytes(12)
    h = HEADER.pack(
        kind, direction, t, t + 500, pid, pid + 1, 5, 0, conn, local, local,
        8080, 50000, AF_INET, 0, role, len(head), len(payload), len(tail), 0,
        tail.ljust(TAIL, b"\0"),
    )
    rec = h + head
    return struct.pack("<H", len(rec)) + rec


def ring_records():
    for path in sorted((ROOT / "mop-protocol/tests/fixtures/http1").glob("*.seg")):
        segments = fixture(path)
        # The server's view: requests come in, responses go out.
        out = [record(KIND_OPEN, 1000)]
        for i, (c2s, payload) in enumerate(segments):
            d = DIR_INGRESS if c2s else DIR_EGRESS
            out.append(record(KIND_DATA, 2000 + 1000 * i, d, payload=payload))
        out.append(record(KIND_CLOSE, 10_000_000))
        data = b"".join(out)
        if len(data) <= 64 * 1024:
            write("ring_records", path.stem, data)


# --- btf -------------------------------------------------------------------------------------

KIND_INT, KIND_STRUCT, KIND_UNION = 1, 4, 5
WANTED = [
    "task_struct", "files_struct", "fdtable", "file", "socket", "sock", "sock_common",
    "user_msghdr", "pt_regs",
]
# Bytes after the 12-byte type header: fixed per kind, or per `vlen` entry.
FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
PER_ENTRY = {6: 8, 13: 8, 15: 12, 19: 12}


def btf():
    raw = pathlib.Path("/sys/kernel/btf/vmlinux").read_bytes()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", raw
    )
    assert magic == 0xEB9F
    types_data = raw[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
    name = lambda off: strings[off : strings.index(b"\0", off)].decode()
    types = [None]
    at = 0
    while at < len(types_data):
        name_off, info, size = struct.unpack_from("<III", types_data, at)
        at += 12
        vlen, kind = info & 0xFFFF, (info >> 24) & 0x1F
        members = []
        if kind in (KIND_STRUCT, KIND_UNION):
            for i in range(vlen):
                members.append(struct.unpack_from("<III", types_data, at + 12 * i))
            at += 12 * vlen
        else:
            at += FIXED.get(kind, 0) + PER_ENTRY.get(kind, 0) * vlen
        types.append((name_off, info, size, members))
    by_name = {}
    for tid, t in enumerate(types):
        if t and (t[1] >> 24) & 0x1F == KIND_STRUCT and t[0] and name(t[0]) not in by_name:
            by_name[name(t[0])] = tid
    # New string table and type list: id 1 is an int every named member points at.
    new_strings = bytearray(b"\0")
    offsets = {}

    def intern(s):
        if s not in offsets:
            offsets[s] = len(new_strings)
            new_strings.extend(s.encode() + b"\0")
        return offsets[s]

    out = [struct.pack("<IIII", intern("int"), KIND_INT << 24, 4, 32)]
    remap = {}

    def emit(tid):
        if tid in remap:
            return remap[tid]
        name_off, info, size, members = types[tid]
        remap[tid] = len(out) + 1
        slot = len(out)
        out.append(b"")
        body = b""
        for m_name, m_type, m_off in members:
            if m_name == 0:
                target = m_type
                while (types[target][1] >> 24) & 0x1F not in (KIND_STRUCT, KIND_UNION):
                    target = types[target][2]
                body += struct.pack("<III", 0, emit(target), m_off)
            else:
                body += struct.pack("<III", intern(name(m_name)), 1, m_off)
        n = intern(name(name_off)) if name_off else 0
        out[slot] = struct.pack("<III", n, info, size) + body
        return remap[tid]

    for s in WANTED:
        emit(by_name[s])
    type_bytes = b"".join(out)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(type_bytes), len(type_bytes), len(new_strings))
    write("btf", "vmlinux-loader-structs", header + type_bytes + bytes(new_strings))


# --- procfs ----------------------------------------------------------------------------------


def procfs():
    write("procfs", "self-stat", pathlib.Path("/proc/self/stat").read_bytes())
    write("procfs", "odd-comm-stat", b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 5 0 0 0 1 2 0 0 20 0 1 0 98765 1 2\n")
    for table in ["tcp", "tcp6"]:
        text = pathlib.Path(f"/proc/net/{table}").read_bytes()
        # Keep the header and up to 40 sockets: enough shapes, a small seed.
        write("procfs", f"net-{table}", b"\n".join(text.split(b"\n")[:41]) + b"\n")


if __name__ == "__main__":
    traceparent()
    config()
    ring_records()
    btf()
    procfs()

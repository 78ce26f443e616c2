#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/:
valid wire payloads of each batch type, SNMP replies of the tables the poller
walks, and the example rule, definition and configuration files of the
repository. Fuzz runs add what they find to the same folders.

    python3 fuzz/seeds.py
"""
import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
TIME = 1_704_067_200_000_000_000  # 2024-01-01


def write(target, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


# Protobuf, as far as the batches need it.
def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(tag, wire_type):
    return varint(tag << 3 | wire_type)


def uint(tag, value):
    return key(tag, 0) + varint(value)


def text(tag, value):
    data = value.encode() if isinstance(value, str) else value
    return key(tag, 2) + varint(len(data)) + data


def message(tag, *fields):
    return text(tag, b"".join(fields))


def double(tag, value):
    return key(tag, 1) + struct.pack("<d", value)


def zigzag(value):
    return (value << 1) ^ (value >> 31)


def label(tag, name, value):
    return message(tag, text(1, name), text(2, value))


def resource():
    return message(1, text(1, "web-1"), uint(2, 1), text(3, "web-1"), label(4, "site", "fra1"))


def sample(name, value_field, labels=()):
    return message(
        2,
        text(1, name),
        *[label(2, n, v) for n, v in labels],
        uint(3, 2 if value_field[0] == 5 else 1),
        uint(4, TIME),
        uint(5, value_field[1]) if value_field[0] == 5 else double(6, value_field[1]),
        uint(7, 3),
        text(8, "By"),
        text(9, "if"),
    )


def metric_batches():
    yield resource() + sample("if.in.octets", (5, 12345), [("ifName", "eth0")]) + text(3, "vigil-agent/0.1.0")
    yield resource() + sample("host.load.1m", (6, 0.5)) + sample("host.cpu.ticks", (5, 2**63), [("mode", "idle")]) + text(3, "vigil-agent/0.1.0")
    yield resource() + resource() + sample("x", (6, float("nan")))


def log_batches():
    source = message(2, text(1, "/var/log/app.log"), text(2, "2049:1234"), uint(3, 2049), uint(4, 1234), text(5, "app"))
    line = lambda offset, data: message(
        3, uint(1, offset), uint(2, TIME), uint(3, TIME), text(4, data), label(5, "level", "error"), uint(8, len(data) + 1)
    )
    yield resource() + source + line(0, b"2024-01-01 ERROR boom") + line(22, b"next")
    yield resource() + source + message(3, uint(1, 5), text(4, b"\xff\xfe"), uint(6, 1), uint(7, 1), uint(8, 3))


def alert_events():
    yield text(1, "host") + text(2, "HostDown") + label(3, "severity", "page") + label(4, "summary", "web-1 is down") + uint(5, 1) + uint(6, TIME) + uint(7, TIME + 60) + double(8, 1.0) + text(9, "fp1") + uint(10, TIME)


def alert_states():
    yield text(1, "host") + text(2, "HostDown") + label(3, "severity", "page") + text(4, "fp1") + uint(5, 2) + uint(6, TIME) + uint(7, TIME + 1) + double(9, 3.0) + uint(10, TIME) + text(11, "vigil.metrics.raw") + uint(12, 3) + uint(13, TIME)


def partial_batches():
    packed = lambda tag, values: text(tag, b"".join(values))
    partial = message(
        2,
        text(1, "site.if.in.bits_per_second.sum"),
        label(2, "site", "ams"),
        uint(3, TIME),
        uint(4, TIME + 60_000_000_000),
        uint(5, 3),
        double(6, 6.0),
        double(7, 1.0),
        double(8, 3.0),
        packed(9, [varint(zigzag(3)), varint(zigzag(-2))]),
        packed(10, [varint(1), varint(2)]),
        packed(11, []),
        packed(12, []),
        uint(13, 0),
        uint(14, 2),
    )
    yield text(1, "site=ams") + partial + text(3, "vigil-derive/0.1.0")


# BER, as far as SNMP replies need it.
def tlv(tag, content):
    length = len(content)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


def ber_int(tag, value, signed=True):
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=signed)
    if not signed:
        raw = raw.lstrip(b"\x00") or b"\x00"
        if raw[0] & 0x80:
            raw = b"\x00" + raw
    return tlv(tag, raw)


def oid(dotted):
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


VALUES = {
    "int": lambda v: ber_int(0x02, v),
    "str": lambda v: tlv(0x04, v.encode()),
    "oid": oid,
    "c32": lambda v: ber_int(0x41, v, signed=False),
    "g32": lambda v: ber_int(0x42, v, signed=False),
    "ticks": lambda v: ber_int(0x43, v, signed=False),
    "c64": lambda v: ber_int(0x46, v, signed=False),
    "nsi": lambda v: tlv(0x81, b""),
    "end": lambda v: tlv(0x82, b""),
}


def reply(varbinds, version=1):
    binds = b"".join(tlv(0x30, oid(name) + VALUES[kind](value)) for name, kind, value in varbinds)
    pdu = tlv(0xA2, ber_int(0x02, 1234) + ber_int(0x02, 0) + ber_int(0x02, 0) + tlv(0x30, binds))
    return tlv(0x30, ber_int(0x02, version) + tlv(0x04, b"public") + pdu)


IF_T = "1.3.6.1.2.1.2.2.1"
IF_X = "1.3.6.1.2.1.31.1.1.1"
# The columns of each walk, in the order the poller asks for them.
IF_FIRST = [f"{IF_T}.2", f"{IF_X}.1", f"{IF_T}.5", f"{IF_X}.15", f"{IF_T}.8", f"{IF_T}.14", f"{IF_T}.20",
            f"{IF_T}.13", f"{IF_T}.19", f"{IF_X}.6", f"{IF_X}.10", f"{IF_X}.7", f"{IF_X}.11"]
IF_FALLBACK = [f"{IF_T}.10", f"{IF_T}.16", f"{IF_T}.11", f"{IF_T}.17"]
HR_STORAGE = [f"1.3.6.1.2.1.25.2.3.1.{arc}" for arc in range(2, 7)]
CISCO_TABLE = ["1.3.6.1.4.1.9.9.48.1.1.1.2", "1.3.6.1.4.1.9.9.48.1.1.1.5", "1.3.6.1.4.1.9.9.48.1.1.1.6"]


def bulk(columns, rows):
    """A GETBULK answer: row by row, one value of each column."""
    return [(f"{column}.{index}", *cell) for index, cells in rows for column, cell in zip(columns, cells)]


def poll(*replies):
    """The replies of one poll, each after its length (two bytes, big-endian)."""
    return b"".join(len(reply).to_bytes(2, "big") + reply for reply in replies)


def snmp_replies():
    ucd = "1.3.6.1.4.1.2021"
    get = reply([
        ("1.3.6.1.2.1.1.3.0", "ticks", 123456), ("1.3.6.1.2.1.1.5.0", "str", "core1"),
        (f"{ucd}.10.1.5.1", "int", 150), (f"{ucd}.4.5.0", "int", 8000000), (f"{ucd}.4.6.0", "int", 1000),
        (f"{ucd}.11.50.0", "c32", 12345), (f"{ucd}.11.53.0", "c32", 2**32 - 1),
        ("1.3.6.1.4.1.9.9.109.1.1.1.1.8.1", "g32", 7),
    ])
    interfaces = reply(bulk(IF_FIRST, [
        (1, [("str", "Ethernet 0"), ("str", "eth0"), ("g32", 10**9), ("g32", 1000), ("int", 1), ("c32", 0),
             ("c32", 2), ("c32", 0), ("c32", 0), ("c64", 2**40), ("c64", 99), ("c64", 5), ("c64", 7)]),
        (2, [("str", "lo"), ("str", "lo\x00\x00"), ("g32", 0), ("g32", 0), ("int", 2), ("c32", 0),
             ("c32", 0), ("c32", 1), ("c32", 0), ("nsi", None), ("nsi", None), ("nsi", None), ("nsi", None)]),
    ]))
    fallback = reply(bulk(IF_FALLBACK, [(2, [("c32", 2**32 - 1), ("c32", 7), ("c32", 1), ("c32", 1)])]), version=0)
    processors = reply([("1.3.6.1.2.1.25.3.3.1.2.196608", "int", 12), ("1.3.6.1.2.1.25.3.3.1.2.196609", "int", 80),
                        ("1.3.6.1.2.1.25.3.3.1.3.1", "end", None)])
    storage = reply(bulk(HR_STORAGE, [
        (1, [("oid", "1.3.6.1.2.1.25.2.1.4"), ("str", "/"), ("int", 4096), ("int", 1000000), ("int", 250000)]),
        (2, [("oid", "1.3.6.1.2.1.25.2.1.2"), ("str", "Physical memory"), ("int", 1024), ("g32", 8000000), ("int", -1)]),
    ]))
    cisco = reply(bulk(CISCO_TABLE, [(1, [("str", "Processor"), ("g32", 100), ("g32", 200)]),
                                     (2, [("str", "I/O"), ("g32", 5), ("nsi", None)])]))
    yield poll(get)
    yield poll(get, interfaces, fallback, processors, storage, cisco)
    yield poll(reply([]), reply([]), processors, storage)


def files(target, *patterns):
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            write(target, path.read_bytes())


def main():
    for target, payloads in [
        ("metric_batch", metric_batches()),
        ("log_batch", log_batches()),
        ("alert_event", alert_events()),
        ("alert_state", alert_states()),
        ("partial_aggregate_batch", partial_batches()),
        ("snmp_reply", snmp_replies()),
    ]:
        for payload in payloads:
            write(target, payload)
    files("rule_file", "rules/*.yaml")
    files("derive_definitions", "derive/*.yaml", "aggregator/src/derive/built-in.yaml")
    files("agent_config", "packaging/config/agent.yaml")
    files("aggregator_config", "packaging/config/aggregator.yaml")
    for text in [b"one\ntwo\r\n\nthree", b"a" * 200 + b"\n", b"\n\n\n"]:
        write("log_lines", text)
    write("multiline", b"\x00\x00\x05\x10\x00\x00" + b"2024-05-01 ERROR x\njava.lang.Exception\n\tat a.b(C.java:1)\n2024-05-01 INFO y\n")
    write("exposition", b"\x00# TYPE up gauge\nup{job=\"node\"} 1 1700000000000\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\n")
    write("exposition", b"\x01# TYPE requests counter\nrequests_total{code=\"200\"} 1027 1700000000.5 # {trace_id=\"a\"} 1\n# EOF\n")


if __name__ == "__main__":
    main()

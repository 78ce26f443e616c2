#!/usr/bin/env python3
"""Writes prometheus-snmp-exporter's snmp.yml (0.21 format, numeric OIDs, since
Debian ships no MIBs) with one module, `vigil`, polling exactly what Vigil's `if` set
polls of a device with 64-bit counters: sysUpTime and sysName by GET, and 13
ifTable and ifXTable columns by GETBULK walks,
with ifName and ifDescr joined as labels.
"""
import sys

max_repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 25
if_table = "1.3.6.1.2.1.2.2.1"
if_x_table = "1.3.6.1.2.1.31.1.1.1"
columns = [
    ("ifSpeed", f"{if_table}.5", "gauge"),
    ("ifOperStatus", f"{if_table}.8", "gauge"),
    ("ifInDiscards", f"{if_table}.13", "counter"),
    ("ifInErrors", f"{if_table}.14", "counter"),
    ("ifOutDiscards", f"{if_table}.19", "counter"),
    ("ifOutErrors", f"{if_table}.20", "counter"),
    ("ifHCInOctets", f"{if_x_table}.6", "counter"),
    ("ifHCInUcastPkts", f"{if_x_table}.7", "counter"),
    ("ifHCOutOctets", f"{if_x_table}.10", "counter"),
    ("ifHCOutUcastPkts", f"{if_x_table}.11", "counter"),
    ("ifHighSpeed", f"{if_x_table}.15", "gauge"),
]
lines = [
    "vigil:",
    "  version: 2",
    "  auth:",
    "    community: public",
    f"  max_repetitions: {max_repetitions}",
    "  retries: 1",
    "  timeout: 2s",
    "  get:",
    "  - 1.3.6.1.2.1.1.3.0",
    "  - 1.3.6.1.2.1.1.5.0",
    "  walk:",
    f"  - {if_table}.2",
    f"  - {if_x_table}.1",
]
lines += [f"  - {oid}" for _, oid, _ in columns]
lines += [
    "  metrics:",
    "  - name: sysUpTime",
    "    oid: 1.3.6.1.2.1.1.3",
    "    type: gauge",
    "  - name: sysName",
    "    oid: 1.3.6.1.2.1.1.5",
    "    type: DisplayString",
]
for name, oid, kind in columns:
    lines += [
        f"  - name: {name}",
        f"    oid: {oid}",
        f"    type: {kind}",
        "    indexes:",
        "    - labelname: ifIndex",
        "      type: gauge",
        "    lookups:",
        "    - labels: [ifIndex]",
        "      labelname: ifName",
        f"      oid: {if_x_table}.1",
        "      type: DisplayString",
        "    - labels: [ifIndex]",
        "      labelname: ifDescr",
        f"      oid: {if_table}.2",
        "      type: DisplayString",
    ]
print("\n".join(lines))

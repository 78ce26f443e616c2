#!/usr/bin/env python3
"""Writes the snmpsim record (.snmprec) of one simulated switch to stdout.

SNMPv2-MIB system scalars, and ifTable and ifXTable for N interfaces (the first
argument): the OIDs both pollers of bench/snmp.sh ask every device for.
"""
import sys

interfaces = int(sys.argv[1]) if len(sys.argv) > 1 else 16
records = [
    ((1, 3, 6, 1, 2, 1, 1, 1, 0), 4, "simulated switch"),
    ((1, 3, 6, 1, 2, 1, 1, 3, 0), 67, "123456"),
    ((1, 3, 6, 1, 2, 1, 1, 5, 0), 4, "sim-switch"),
]
if_table = (1, 3, 6, 1, 2, 1, 2, 2, 1)
if_x_table = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
for index in range(1, interfaces + 1):
    name = f"eth{index - 1}"
    columns = [
        (if_table + (1,), 2, index),
        (if_table + (2,), 4, name),
        (if_table + (5,), 66, 1000000000),
        (if_table + (8,), 2, 1),
        (if_table + (10,), 65, 1000 * index),
        (if_table + (11,), 65, 10 * index),
        (if_table + (13,), 65, 0),
        (if_table + (14,), 65, 1),
        (if_table + (16,), 65, 2000 * index),
        (if_table + (17,), 65, 20 * index),
        (if_table + (19,), 65, 0),
        (if_table + (20,), 65, 2),
        (if_x_table + (1,), 4, name),
        (if_x_table + (6,), 70, 10**12 + index),
        (if_x_table + (7,), 70, 10**9 + index),
        (if_x_table + (10,), 70, 2 * 10**12 + index),
        (if_x_table + (11,), 70, 2 * 10**9 + index),
        (if_x_table + (15,), 66, 1000),
    ]
    records.extend((column + (index,), tag, value) for column, tag, value in columns)
for oid, tag, value in sorted(records):
    print(f"{'.'.join(map(str, oid))}|{tag}|{value}")

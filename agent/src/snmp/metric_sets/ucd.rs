//! The built-in set `ucd`: the load averages, memory and CPU counters of
//! net-snmp's UCD-SNMP-MIB, fetched as scalars in every poll of a target that
//! lists it and scaled to the units of the host metrics.

use super::{ScalarSpec, Scale, under};

const UCD_MEMORY: [u64; 8] = [1, 3, 6, 1, 4, 1, 2021, 4];
const UCD_LOAD_INT: [u64; 10] = [1, 3, 6, 1, 4, 1, 2021, 10, 1, 5];
const UCD_SYSTEM_STATS: [u64; 8] = [1, 3, 6, 1, 4, 1, 2021, 11];

pub(super) fn ucd_scalars() -> Vec<ScalarSpec> {
    let memory = |arc: u64, name: &str| {
        ScalarSpec::new(
            "ucd",
            name,
            under(&UCD_MEMORY, &[arc, 0]),
            "By",
            Scale::KilobytesToBytes,
        )
    };
    let load = |row: u64, name: &str| {
        ScalarSpec::new(
            "ucd",
            name,
            under(&UCD_LOAD_INT, &[row]),
            "",
            Scale::Hundredths,
        )
    };
    let ticks = |arc: u64, mode: &str| {
        ScalarSpec::new(
            "ucd",
            "host.cpu.ticks",
            under(&UCD_SYSTEM_STATS, &[arc, 0]),
            "",
            Scale::Raw,
        )
        .labelled("mode", mode)
    };
    vec![
        load(1, "host.load.1m"),
        load(2, "host.load.5m"),
        load(3, "host.load.15m"),
        memory(5, "host.memory.total_bytes"),
        memory(6, "host.memory.free_bytes"),
        memory(14, "host.memory.buffers_bytes"),
        memory(15, "host.memory.cached_bytes"),
        memory(3, "host.swap.total_bytes"),
        memory(4, "host.swap.free_bytes"),
        ticks(50, "user"),
        ticks(51, "nice"),
        ticks(52, "system"),
        ticks(53, "idle"),
        ticks(54, "iowait"),
        ticks(56, "irq"),
        ticks(61, "softirq"),
        ticks(64, "steal"),
    ]
}

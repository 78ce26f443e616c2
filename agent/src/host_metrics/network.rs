//! Network interface counters from /proc/net/dev, for the interfaces the
//! configuration selects, as the `if` samples of the host's batch (named as the
//! SNMP poller names them).

use super::{HostCollector, HostMetricError, Samples, read};
use vigil_proto::labels::label;

impl HostCollector {
    pub(super) fn interfaces(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for interface in read(&self.proc_root, "net/dev", parse_net_dev)? {
            if !self.interfaces.selects(&interface.name) {
                continue;
            }
            let labels = [label("ifName", &interface.name)];
            let counters = [
                ("if.in.octets", interface.received.bytes, "By"),
                ("if.out.octets", interface.sent.bytes, "By"),
                ("if.in.packets", interface.received.packets, "{packet}"),
                ("if.out.packets", interface.sent.packets, "{packet}"),
                ("if.in.errors", interface.received.errors, "{packet}"),
                ("if.out.errors", interface.sent.errors, "{packet}"),
                ("if.in.discards", interface.received.dropped, "{packet}"),
                ("if.out.discards", interface.sent.dropped, "{packet}"),
            ];
            for (name, value, unit) in counters {
                samples.counter(name, value, unit, "if", &labels);
            }
        }
        Ok(())
    }
}

/// Counters of one direction of one interface.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TrafficCounters {
    pub(super) bytes: u64,
    pub(super) packets: u64,
    pub(super) errors: u64,
    pub(super) dropped: u64,
}

/// The counters of one network interface, from one line of /proc/net/dev.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InterfaceStats {
    pub(super) name: String,
    pub(super) received: TrafficCounters,
    pub(super) sent: TrafficCounters,
}

/// Every interface of /proc/net/dev: two header lines, then `name: ` and 8
/// receive and 8 transmit counters.
pub(super) fn parse_net_dev(text: &str) -> Result<Vec<InterfaceStats>, String> {
    let mut interfaces = Vec::new();
    for (index, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let (name, counters) = line
            .rsplit_once(':')
            .ok_or_else(|| format!("line {line_number}: no `name:` before the counters"))?;
        let name = name.trim();
        let values = counters
            .split_whitespace()
            .map(|value| {
                value.parse::<u64>().map_err(|_| {
                    format!("line {line_number}: `{name}` has `{value}`, not a whole number")
                })
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() < 16 {
            return Err(format!(
                "line {line_number}: `{name}` has {} counters, expected 16",
                values.len()
            ));
        }
        let direction = |first: usize| TrafficCounters {
            bytes: values[first],
            packets: values[first + 1],
            errors: values[first + 2],
            dropped: values[first + 3],
        };
        interfaces.push(InterfaceStats {
            name: name.to_owned(),
            received: direction(0),
            sent: direction(8),
        });
    }
    if interfaces.is_empty() && !text.contains('|') {
        return Err("no header line: not the format of /proc/net/dev".into());
    }
    Ok(interfaces)
}

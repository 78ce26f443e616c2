//! vigil-agent: the daemon on every host, where Vigil's data path begins.
//!
//! It tails log files (with checkpoints that move only after the bus acknowledged
//! the lines), reads host metrics from /proc and polls devices over SNMP, and
//! publishes everything as protobuf batches keyed by resource: to Kafka when run
//! standalone, to the in-process bus in the all-in-one mode. Metric batches pass
//! through a bounded spool on disk, where they wait while the bus is down.
//!
//! [`Agent`] assembles the sources from an [`AgentConfig`]; the `vigil-agent`
//! binary only loads the configuration, serves the HTTP endpoints and waits for a
//! signal.

mod agent;
mod checkpoint;
pub mod config;
pub mod container_metrics;
pub mod host_metrics;
mod journald;
pub mod parse;
pub mod scrape;
mod self_metrics;
pub mod snmp;
mod spool;
mod tailer;

/// Entry points of the fuzz targets in `fuzz/` into the agent's parsers of
/// outside input that are internal to it: the log line splitter, the multiline
/// joiner and the handling of SNMP replies. Not an interface to build on.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::snmp::fuzzing::snmp_reply_samples;
    pub use crate::tailer::fuzzing::{Line, Multiline, Splitter};
}

pub use agent::{Agent, AgentError};
pub use checkpoint::CheckpointError;
pub use config::AgentConfig;
pub use snmp::{PollError, poll_once};
pub use spool::SpoolError;

/// `MetricBatch.producer` of every batch the agent makes.
const PRODUCER: &str = concat!("vigil-agent/", env!("CARGO_PKG_VERSION"));

/// `time` as nanoseconds since the Unix epoch, the wire's timestamps.
fn unix_nanos(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

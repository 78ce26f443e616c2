//! Harness for Vigil's end-to-end tests.
//!
//! Tests start the real Vigil binaries against real servers on loopback: etcd, an
//! SNMP agent (net-snmp's snmpd), a Kafka-compatible broker (tansu) and an
//! Elasticsearch-API server (noida-db). [`servers::TestServers::get`] starts one set
//! per test process on free ports; `bash scripts/test.sh` installs them.
//!
//! Everything here is blocking and panics with a message that says what failed, so a
//! test reads as a list of steps. From async tests, call it inside
//! `tokio::task::spawn_blocking` when other tasks must keep running meanwhile. The
//! exception is [`polling_agent`], which runs an agent inside the test's runtime.

pub mod alert_feed;
pub mod binaries;
pub mod bulk_proxy;
pub mod consumer_group;
pub mod deployment;
pub mod elastic;
pub mod hostile;
mod http;
mod http_exchange;
pub mod index_setup;
pub mod journal;
pub mod kibana;
pub mod names;
pub mod polling_agent;
pub mod ports;
pub mod process;
pub mod readiness;
pub mod servers;
pub mod tls;
pub mod wait;
pub mod webhook;

pub use binaries::vigil_binary;
pub use names::unique_name;
pub use process::ChildProcess;
pub use servers::TestServers;
pub use wait::{wait_until, wait_while_progressing};

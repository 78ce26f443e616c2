//! Plumbing both Vigil binaries share: the message bus between stages (Kafka, or an
//! in-process bus in the all-in-one mode), secrets, the etcd prefix watch, self-metrics
//! with the HTTP health and metrics endpoints, and shutdown on signals.
//!
//! Stages depend on these narrow interfaces only, so the same source, rule and alert
//! code runs on a fleet and in one process.

pub mod bus;
pub mod etcd;
pub mod health;
pub mod kafka;
pub mod plaintext;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use bus::{Bus, BusError, Followed, Follower, Message, Publisher, Subscription};
pub use health::{Connection, Health};
pub use secret::SecretRef;
pub use telemetry::SelfMetrics;

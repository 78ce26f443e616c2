//! Vigil's wire contract: the protobuf batches every stage reads and writes, the
//! Kafka topic names, and the codec that turns batches into message payloads.
//!
//! Every message on a Vigil topic is one batch of one resource, keyed by the
//! resource id, so per-series state stays in one partition. What a message may
//! carry (the range of its times, names, how many labels, which values) is set
//! out in [`limits`]; both decoders refuse anything else alike.

pub mod codec;
pub mod labels;
pub mod limits;
pub mod log_fields;
pub mod series_identity;
pub mod staleness;
pub mod topics;
pub mod view;

/// Generated protobuf types (package `vigil.v1`), checked in and kept fresh by a test.
#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod v1 {
    include!("generated/vigil.v1.rs");
}

pub use codec::{DecodeError, Payload};
pub use topics::{TopicError, Topics};

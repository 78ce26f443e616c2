//! The batch codec: protobuf encoding of batches into Kafka payloads and checked
//! decoding back.
//!
//! Protobuf is lenient (unknown fields are skipped), so bytes that are not a Vigil
//! batch can decode "successfully" into an empty message. Decoding therefore also
//! checks the invariants every producer guarantees, so that garbage is told apart
//! from data and sent to the dead-letter topic instead of being half-processed.

use crate::v1::{AlertEvent, AlertState, LogBatch, MetricBatch, PartialAggregateBatch, sample};
use prost::Message;
use thiserror::Error;

/// Why a payload is not a valid batch of the expected type.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The bytes are not protobuf of the expected message type.
    #[error("not a protobuf {kind}: {source}")]
    Protobuf {
        kind: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// The bytes are not protobuf of the expected message type, as a borrowing
    /// decoder found (see [`crate::view`]).
    #[error("not a protobuf {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
    /// The bytes decode, but break an invariant of the contract.
    #[error("invalid {kind}: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

/// A batch type that can travel as a Kafka payload.
pub trait Payload: Message + Default + Sized {
    /// Message type name, used in errors and in the `vigil-schema` header.
    const KIND: &'static str;

    /// The invariants every producer guarantees; `Err` names the first one broken.
    fn check(&self) -> Result<(), String>;

    /// The Kafka message key: the resource id, or the alert fingerprint.
    fn key(&self) -> &str;

    /// Encode for the wire.
    fn to_payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decode from the wire and check the invariants.
    fn from_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message = Self::decode(bytes).map_err(|source| DecodeError::Protobuf {
            kind: Self::KIND,
            source,
        })?;
        message.check().map_err(|reason| DecodeError::Invalid {
            kind: Self::KIND,
            reason,
        })?;
        Ok(message)
    }
}

impl Payload for MetricBatch {
    const KIND: &'static str = "vigil.v1.MetricBatch";

    fn check(&self) -> Result<(), String> {
        let resource = self.resource.as_ref().ok_or("missing resource")?;
        if resource.id.is_empty() {
            return Err("empty resource id".into());
        }
        if self.samples.is_empty() {
            return Err("no samples".into());
        }
        for (index, sample) in self.samples.iter().enumerate() {
            if sample.name.is_empty() {
                return Err(format!("sample {index} has no name"));
            }
            if sample.time_unix_nano <= 0 {
                return Err(format!(
                    "sample {index} (`{}`) has no timestamp",
                    sample.name
                ));
            }
            match sample.value {
                None => return Err(format!("sample {index} (`{}`) has no value", sample.name)),
                Some(sample::Value::Gauge(value)) if !value.is_finite() => {
                    return Err(format!(
                        "sample {index} (`{}`) has a non-finite gauge",
                        sample.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn key(&self) -> &str {
        self.resource.as_ref().map_or("", |r| r.id.as_str())
    }
}

impl Payload for LogBatch {
    const KIND: &'static str = "vigil.v1.LogBatch";

    fn check(&self) -> Result<(), String> {
        let resource = self.resource.as_ref().ok_or("missing resource")?;
        if resource.id.is_empty() {
            return Err("empty resource id".into());
        }
        let source = self.source.as_ref().ok_or("missing source")?;
        if source.source_id.is_empty() {
            return Err("empty source id".into());
        }
        if self.lines.is_empty() {
            return Err("no lines".into());
        }
        for pair in self.lines.windows(2) {
            if pair[1].offset < pair[0].offset + pair[0].length {
                return Err(format!(
                    "line at offset {} overlaps the line at offset {}",
                    pair[1].offset, pair[0].offset
                ));
            }
        }
        Ok(())
    }

    fn key(&self) -> &str {
        self.resource.as_ref().map_or("", |r| r.id.as_str())
    }
}

impl Payload for AlertEvent {
    const KIND: &'static str = "vigil.v1.AlertEvent";

    fn check(&self) -> Result<(), String> {
        if self.alert.is_empty() {
            return Err("empty alert name".into());
        }
        if self.fingerprint.is_empty() {
            return Err("empty fingerprint".into());
        }
        Ok(())
    }

    fn key(&self) -> &str {
        &self.fingerprint
    }
}

impl Payload for AlertState {
    const KIND: &'static str = "vigil.v1.AlertState";

    fn check(&self) -> Result<(), String> {
        if self.alert.is_empty() {
            return Err("empty alert name".into());
        }
        if self.fingerprint.is_empty() {
            return Err("empty fingerprint".into());
        }
        if self.active_at_unix_nano == 0 {
            return Err("no time the alert became active".into());
        }
        Ok(())
    }

    fn key(&self) -> &str {
        &self.fingerprint
    }
}

impl Payload for PartialAggregateBatch {
    const KIND: &'static str = "vigil.v1.PartialAggregateBatch";

    fn check(&self) -> Result<(), String> {
        if self.group_key.is_empty() {
            return Err("empty group key".into());
        }
        if self.partials.is_empty() {
            return Err("no partial aggregates".into());
        }
        for (index, partial) in self.partials.iter().enumerate() {
            if partial.definition.is_empty() {
                return Err(format!("partial {index} names no definition"));
            }
            if partial.window_end_unix_nano <= partial.window_start_unix_nano {
                return Err(format!(
                    "partial {index} (`{}`) has a window that ends before it starts",
                    partial.definition
                ));
            }
            if partial.positive_bucket_index.len() != partial.positive_bucket_count.len()
                || partial.negative_bucket_index.len() != partial.negative_bucket_count.len()
            {
                return Err(format!(
                    "partial {index} (`{}`) has sketch buckets without counts",
                    partial.definition
                ));
            }
            if !(partial.sum.is_finite() && partial.min.is_finite() && partial.max.is_finite()) {
                return Err(format!(
                    "partial {index} (`{}`) has a non-finite sum, min or max",
                    partial.definition
                ));
            }
        }
        Ok(())
    }

    fn key(&self) -> &str {
        &self.group_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{LogLine, LogSource, Resource, Sample};
    use proptest::prelude::*;

    fn resource() -> Resource {
        Resource {
            id: "web-1".into(),
            host_name: "web-1".into(),
            ..Resource::default()
        }
    }

    fn metric_batch(counter: u64) -> MetricBatch {
        MetricBatch {
            resource: Some(resource()),
            samples: vec![Sample {
                name: "if.in.octets".into(),
                time_unix_nano: 1,
                value: Some(sample::Value::Counter(counter)),
                ..Sample::default()
            }],
            producer: "test".into(),
        }
    }

    #[test]
    fn text_is_not_mistaken_for_a_batch() {
        let error = LogBatch::from_payload(b"this is not protobuf at all\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("not a protobuf vigil.v1.LogBatch")
                || error.to_string().starts_with("invalid vigil.v1.LogBatch"),
            "{error}"
        );
        let error = MetricBatch::from_payload(b"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid vigil.v1.MetricBatch: missing resource"
        );
    }

    #[test]
    fn partial_aggregates_must_have_a_window_and_matching_sketch_buckets() {
        use crate::v1::PartialAggregate;
        let partial = PartialAggregate {
            definition: "site.traffic".into(),
            window_start_unix_nano: 60,
            window_end_unix_nano: 120,
            count: 1,
            positive_bucket_index: vec![3],
            positive_bucket_count: vec![1],
            ..PartialAggregate::default()
        };
        let batch = PartialAggregateBatch {
            group_key: "site=ams".into(),
            partials: vec![partial.clone()],
            producer: "test".into(),
        };
        assert!(PartialAggregateBatch::from_payload(&batch.to_payload()).is_ok());
        let no_counts = PartialAggregateBatch {
            partials: vec![PartialAggregate {
                positive_bucket_count: vec![],
                ..partial.clone()
            }],
            ..batch.clone()
        };
        assert_eq!(
            PartialAggregateBatch::from_payload(&no_counts.to_payload())
                .unwrap_err()
                .to_string(),
            "invalid vigil.v1.PartialAggregateBatch: partial 0 (`site.traffic`) has sketch buckets without counts"
        );
        let backwards = PartialAggregateBatch {
            partials: vec![PartialAggregate {
                window_end_unix_nano: 60,
                ..partial
            }],
            ..batch
        };
        assert!(
            PartialAggregateBatch::from_payload(&backwards.to_payload())
                .unwrap_err()
                .to_string()
                .ends_with("has a window that ends before it starts")
        );
    }

    #[test]
    fn overlapping_lines_are_rejected() {
        let line = |offset| LogLine {
            offset,
            length: 10,
            message: b"123456789".to_vec(),
            ..LogLine::default()
        };
        let batch = LogBatch {
            resource: Some(resource()),
            source: Some(LogSource {
                path: "/var/log/app.log".into(),
                source_id: "1:2".into(),
                ..LogSource::default()
            }),
            lines: vec![line(0), line(5)],
        };
        let error = LogBatch::from_payload(&batch.to_payload()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid vigil.v1.LogBatch: line at offset 5 overlaps the line at offset 0"
        );
    }

    proptest! {
        #[test]
        fn counters_round_trip_exactly(counter in any::<u64>()) {
            let batch = metric_batch(counter);
            let decoded = MetricBatch::from_payload(&batch.to_payload()).unwrap();
            prop_assert_eq!(decoded, batch);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = MetricBatch::from_payload(&bytes);
            let _ = LogBatch::from_payload(&bytes);
            let _ = AlertEvent::from_payload(&bytes);
        }
    }
}

//! The batch codec: protobuf encoding of batches into Kafka payloads and checked
//! decoding back.
//!
//! Protobuf is lenient (unknown fields are skipped), so bytes that are not a Vigil
//! batch can decode "successfully" into an empty message. Decoding therefore also
//! checks the invariants every producer guarantees (see [`crate::limits`]), so that
//! garbage is told apart from data and sent to the dead-letter topic instead of
//! being half-processed, and no value a stage computes with can crash it.

use crate::limits::{self, Unset};
use crate::v1::{
    AlertEvent, AlertState, Label, LogBatch, MetricBatch, PartialAggregate, PartialAggregateBatch,
};
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
        limits::resource(&resource.id, names(&resource.attributes))?;
        if self.samples.is_empty() {
            return Err("no samples".into());
        }
        for (index, sample) in self.samples.iter().enumerate() {
            limits::sample(
                index,
                &sample.name,
                sample.time_unix_nano,
                sample.value.is_some(),
                names(&sample.labels),
            )?;
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
        limits::resource(&resource.id, names(&resource.attributes))?;
        let source = self.source.as_ref().ok_or("missing source")?;
        if source.source_id.is_empty() {
            return Err("empty source id".into());
        }
        if self.lines.is_empty() {
            return Err("no lines".into());
        }
        let mut previous: Option<(u64, u64)> = None;
        for (index, line) in self.lines.iter().enumerate() {
            let subject = || format!("line {index} (at offset {})", line.offset);
            limits::time(
                "event_time_unix_nano",
                line.event_time_unix_nano,
                Unset::Allowed,
            )
            .and_then(|()| {
                limits::time(
                    "observed_time_unix_nano",
                    line.observed_time_unix_nano,
                    Unset::Allowed,
                )
            })
            .and_then(|()| {
                limits::log_fields(
                    line.fields
                        .iter()
                        .map(|field| (field.name.as_str(), field.value.as_str())),
                )
            })
            .map_err(|reason| format!("{} {reason}", subject()))?;
            let end = line.offset.checked_add(line.length).ok_or_else(|| {
                format!(
                    "{} has `length` {}, which ends past the largest offset a file can have",
                    subject(),
                    line.length
                )
            })?;
            if let Some((offset, previous_end)) = previous
                && line.offset < previous_end
            {
                return Err(format!(
                    "line at offset {} overlaps the line at offset {offset}",
                    line.offset
                ));
            }
            previous = Some((line.offset, end));
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
        limits::labels("label", names(&self.labels))
            .and_then(|()| limits::labels("annotation", names(&self.annotations)))
            .and_then(|()| {
                limits::time(
                    "starts_at_unix_nano",
                    self.starts_at_unix_nano,
                    Unset::Allowed,
                )
            })
            .and_then(|()| {
                limits::time("ends_at_unix_nano", self.ends_at_unix_nano, Unset::Allowed)
            })
            .and_then(|()| {
                limits::time(
                    "evaluated_at_unix_nano",
                    self.evaluated_at_unix_nano,
                    Unset::Allowed,
                )
            })
            .map_err(|reason| format!("alert `{}` {reason}", self.alert))
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
        let times = [
            (
                "active_at_unix_nano",
                self.active_at_unix_nano,
                Unset::Refused,
            ),
            (
                "fired_at_unix_nano",
                self.fired_at_unix_nano,
                Unset::Allowed,
            ),
            (
                "cleared_at_unix_nano",
                self.cleared_at_unix_nano,
                Unset::Allowed,
            ),
            (
                "evaluated_at_unix_nano",
                self.evaluated_at_unix_nano,
                Unset::Allowed,
            ),
            (
                "notified_at_unix_nano",
                self.notified_at_unix_nano,
                Unset::Allowed,
            ),
        ];
        limits::labels("label", names(&self.labels))
            .and_then(|()| {
                times
                    .into_iter()
                    .try_for_each(|(field, value, unset)| limits::time(field, value, unset))
            })
            .map_err(|reason| format!("alert `{}` {reason}", self.alert))
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
            check_partial(partial)
                .map_err(|reason| format!("partial {index} (`{}`) {reason}", partial.definition))?;
        }
        Ok(())
    }

    fn key(&self) -> &str {
        &self.group_key
    }
}

/// The names of a label set, for [`limits::labels`].
fn names(labels: &[Label]) -> impl ExactSizeIterator<Item = &str> {
    labels.iter().map(|label| label.name.as_str())
}

/// The checks of one partial aggregate; the reason reads after the partial's name.
fn check_partial(partial: &PartialAggregate) -> Result<(), String> {
    limits::time(
        "window_start_unix_nano",
        partial.window_start_unix_nano,
        Unset::Allowed,
    )?;
    limits::time(
        "window_end_unix_nano",
        partial.window_end_unix_nano,
        Unset::Allowed,
    )?;
    if partial.window_end_unix_nano <= partial.window_start_unix_nano {
        return Err("has a window that ends before it starts".into());
    }
    if partial.positive_bucket_index.len() != partial.positive_bucket_count.len()
        || partial.negative_bucket_index.len() != partial.negative_bucket_count.len()
    {
        return Err("has sketch buckets without counts".into());
    }
    for (field, value) in [
        ("sum", partial.sum),
        ("min", partial.min),
        ("max", partial.max),
    ] {
        if !value.is_finite() {
            return Err(format!("has a non-finite `{field}` ({value})"));
        }
    }
    if partial.count > 0 && partial.min > partial.max {
        return Err(format!(
            "has `min` {} above `max` {} (with `count` {})",
            partial.min, partial.max, partial.count
        ));
    }
    limits::labels("group label", names(&partial.group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{LogLine, LogSource, Resource, Sample, sample};
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

    fn partial_batch(partial: crate::v1::PartialAggregate) -> PartialAggregateBatch {
        PartialAggregateBatch {
            group_key: "site=ams".into(),
            partials: vec![partial],
            producer: "test".into(),
        }
    }

    fn refusal<P: Payload>(batch: &P) -> String {
        P::from_payload(&batch.to_payload())
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default()
    }

    // A partial with min above max passed the check, and derive panicked clamping
    // a quantile to [min, max], replaying the message on every restart.
    #[test]
    fn a_partial_with_min_above_max_is_refused() {
        use crate::v1::PartialAggregate;
        let partial = PartialAggregate {
            definition: "site.latency".into(),
            window_start_unix_nano: 60,
            window_end_unix_nano: 120,
            count: 3,
            sum: 6.0,
            min: 5.0,
            max: 1.0,
            positive_bucket_index: vec![3],
            positive_bucket_count: vec![3],
            ..PartialAggregate::default()
        };
        assert_eq!(
            refusal(&partial_batch(partial.clone())),
            "invalid vigil.v1.PartialAggregateBatch: partial 0 (`site.latency`) has `min` 5 above `max` 1 (with `count` 3)"
        );
        // An empty partial's min and max mean nothing.
        let empty = PartialAggregate {
            count: 0,
            sum: 0.0,
            positive_bucket_index: vec![],
            positive_bucket_count: vec![],
            ..partial.clone()
        };
        assert_eq!(refusal(&partial_batch(empty)), "");
        let nan = PartialAggregate {
            max: f64::NAN,
            ..partial.clone()
        };
        assert_eq!(
            refusal(&partial_batch(nan)),
            "invalid vigil.v1.PartialAggregateBatch: partial 0 (`site.latency`) has a non-finite `max` (NaN)"
        );
        let far = PartialAggregate {
            window_end_unix_nano: i64::MAX,
            ..partial
        };
        assert_eq!(
            refusal(&partial_batch(far)),
            "invalid vigil.v1.PartialAggregateBatch: partial 0 (`site.latency`) has `window_end_unix_nano` 9223372036854775807, after 2200-01-01 (times are nanoseconds since the Unix epoch)"
        );
    }

    #[test]
    fn a_log_line_with_too_many_fields_is_refused_naming_the_line() {
        let batch = LogBatch {
            resource: Some(resource()),
            source: Some(LogSource {
                source_id: "1:2".into(),
                ..LogSource::default()
            }),
            lines: vec![LogLine {
                offset: 40,
                length: 2,
                fields: vec![crate::labels::label("k", "v"); crate::limits::MAX_LOG_FIELDS + 1],
                ..LogLine::default()
            }],
        };
        assert_eq!(
            refusal(&batch),
            "invalid vigil.v1.LogBatch: line 0 (at offset 40) has 1001 fields, more than the 1000 allowed"
        );
    }

    // `offset + length` of a line overflowed in the check itself.
    #[test]
    fn a_log_line_ending_past_the_largest_offset_is_refused() {
        let batch = LogBatch {
            resource: Some(resource()),
            source: Some(LogSource {
                source_id: "1:2".into(),
                ..LogSource::default()
            }),
            lines: vec![
                LogLine {
                    offset: u64::MAX - 1,
                    length: 2,
                    ..LogLine::default()
                },
                LogLine {
                    offset: 0,
                    length: 1,
                    ..LogLine::default()
                },
            ],
        };
        assert_eq!(
            refusal(&batch),
            "invalid vigil.v1.LogBatch: line 0 (at offset 18446744073709551614) has `length` 2, which ends past the largest offset a file can have"
        );
        let before_1970 = LogBatch {
            lines: vec![LogLine {
                offset: 0,
                length: 1,
                event_time_unix_nano: -1,
                ..LogLine::default()
            }],
            ..batch
        };
        assert_eq!(
            refusal(&before_1970),
            "invalid vigil.v1.LogBatch: line 0 (at offset 0) has `event_time_unix_nano` -1, before 1970 (times are nanoseconds since the Unix epoch)"
        );
    }

    #[test]
    fn samples_need_a_name_a_time_since_1970_and_named_bounded_labels() {
        let with = |change: &dyn Fn(&mut Sample)| {
            let mut batch = metric_batch(1);
            change(&mut batch.samples[0]);
            refusal(&batch)
        };
        assert_eq!(with(&|_| {}), "");
        assert_eq!(
            with(&|sample| sample.name.clear()),
            "invalid vigil.v1.MetricBatch: sample 0 has no name"
        );
        assert_eq!(
            with(&|sample| sample.time_unix_nano = 0),
            "invalid vigil.v1.MetricBatch: sample 0 (`if.in.octets`) has no `time_unix_nano` (it is 0)"
        );
        assert_eq!(
            with(&|sample| sample.time_unix_nano = i64::MIN),
            "invalid vigil.v1.MetricBatch: sample 0 (`if.in.octets`) has `time_unix_nano` -9223372036854775808, before 1970 (times are nanoseconds since the Unix epoch)"
        );
        assert_eq!(
            with(&|sample| sample.labels = vec![crate::labels::label("", "x")]),
            "invalid vigil.v1.MetricBatch: sample 0 (`if.in.octets`) has an unnamed label at position 0"
        );
        assert_eq!(
            with(&|sample| sample.labels = vec![crate::labels::label("a", ""); 1_001]),
            "invalid vigil.v1.MetricBatch: sample 0 (`if.in.octets`) has 1001 labels, more than the 1000 allowed"
        );
        assert_eq!(
            with(&|sample| sample.value = Some(sample::Value::Gauge(f64::NAN))),
            ""
        );
        let mut unnamed_attribute = metric_batch(1);
        unnamed_attribute.resource.as_mut().unwrap().attributes =
            vec![crate::labels::label("", "x")];
        assert_eq!(
            refusal(&unnamed_attribute),
            "invalid vigil.v1.MetricBatch: resource `web-1` has an unnamed attribute at position 0"
        );
    }

    #[test]
    fn alert_times_stay_between_1970_and_2200() {
        let event = AlertEvent {
            alert: "Down".into(),
            fingerprint: "f".into(),
            starts_at_unix_nano: i64::MAX,
            ..AlertEvent::default()
        };
        assert_eq!(
            refusal(&event),
            "invalid vigil.v1.AlertEvent: alert `Down` has `starts_at_unix_nano` 9223372036854775807, after 2200-01-01 (times are nanoseconds since the Unix epoch)"
        );
        let state = AlertState {
            alert: "Down".into(),
            fingerprint: "f".into(),
            active_at_unix_nano: i64::MIN,
            ..AlertState::default()
        };
        assert_eq!(
            refusal(&state),
            "invalid vigil.v1.AlertState: alert `Down` has `active_at_unix_nano` -9223372036854775808, before 1970 (times are nanoseconds since the Unix epoch)"
        );
        let unset = AlertState {
            active_at_unix_nano: 0,
            ..state
        };
        assert_eq!(
            refusal(&unset),
            "invalid vigil.v1.AlertState: alert `Down` has no `active_at_unix_nano` (it is 0)"
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
            let _ = AlertState::from_payload(&bytes);
            let _ = PartialAggregateBatch::from_payload(&bytes);
            let _ = crate::view::MetricBatchView::decode(&bytes);
        }
    }
}

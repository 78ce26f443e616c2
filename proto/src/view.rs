//! Borrowing views of metric batches, and a writer of derived batches: a stage
//! that reads every sample once and writes new ones (derive) decodes names,
//! labels and metric sets as `&str` into the payload, and writes its output
//! straight into protobuf bytes, instead of allocating and freeing a `String` for
//! each. The view checks the invariants of [`MetricBatch`]'s [`Payload::check`],
//! and the writer's bytes decode into exactly the [`MetricBatch`] prost would
//! have encoded (both are tested against prost).

use crate::codec::{DecodeError, Payload};
use crate::v1::{MetricBatch, MetricKind, ValueType, sample};
use prost::bytes::Buf;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, skip_field,
};

const KIND: &str = <MetricBatch as Payload>::KIND;

/// A label of a sample or an attribute of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelView<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// The resource of a batch, with its encoded bytes for writing it again.
#[derive(Debug, Clone, Default)]
pub struct ResourceView<'a> {
    pub id: &'a str,
    pub kind: i32,
    pub host_name: &'a str,
    pub attributes: Vec<LabelView<'a>>,
    /// The resource message as it was on the wire.
    pub encoded: &'a [u8],
}

/// One sample; its labels are held by the batch (see [`MetricBatchView::labels`]).
#[derive(Debug, Clone, Copy)]
pub struct SampleView<'a> {
    pub name: &'a str,
    labels_start: u32,
    labels_end: u32,
    pub kind: i32,
    pub time_unix_nano: i64,
    pub value: Option<sample::Value>,
    pub value_type: i32,
    pub unit: &'a str,
    pub metric_set: &'a str,
}

/// A decoded and checked metric batch borrowing from its payload.
#[derive(Debug, Clone)]
pub struct MetricBatchView<'a> {
    pub resource: ResourceView<'a>,
    pub samples: Vec<SampleView<'a>>,
    labels: Vec<LabelView<'a>>,
}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        kind: KIND,
        reason: reason.into(),
    }
}

fn protobuf(source: prost::DecodeError) -> DecodeError {
    DecodeError::Protobuf { kind: KIND, source }
}

fn malformed(reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        kind: KIND,
        reason: reason.into(),
    }
}

fn text<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| malformed(format!("{field}: invalid UTF-8")))
}

/// Splits off the length-delimited field at the front of `buf`.
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let length = decode_varint(buf).map_err(protobuf)?;
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= buf.len())
        .ok_or_else(|| malformed("buffer underflow"))?;
    let (field, rest) = buf.split_at(length);
    *buf = rest;
    Ok(field)
}

/// Walks the fields of a message, handing each (tag, wire type) to `field`, which
/// returns `false` for fields it does not read (they are skipped).
fn fields<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(protobuf)?;
        if !field(tag, wire_type, &mut buf)? {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(protobuf)?;
        }
    }
    Ok(())
}

fn expect(wire_type: WireType, expected: WireType) -> Result<(), DecodeError> {
    if wire_type == expected {
        Ok(())
    } else {
        Err(malformed(format!(
            "invalid wire type: {wire_type:?} (expected {expected:?})"
        )))
    }
}

fn label(bytes: &[u8]) -> Result<LabelView<'_>, DecodeError> {
    let mut view = LabelView {
        name: "",
        value: "",
    };
    fields(bytes, |tag, wire_type, buf| {
        match tag {
            1 | 2 => {
                expect(wire_type, WireType::LengthDelimited)?;
                let value = text("Label", delimited(buf)?)?;
                if tag == 1 {
                    view.name = value;
                } else {
                    view.value = value;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(view)
}

fn resource(bytes: &[u8]) -> Result<ResourceView<'_>, DecodeError> {
    let mut view = ResourceView {
        encoded: bytes,
        ..ResourceView::default()
    };
    fields(bytes, |tag, wire_type, buf| {
        match tag {
            1 | 3 => {
                expect(wire_type, WireType::LengthDelimited)?;
                let value = text("Resource", delimited(buf)?)?;
                if tag == 1 {
                    view.id = value;
                } else {
                    view.host_name = value;
                }
            }
            2 => {
                expect(wire_type, WireType::Varint)?;
                view.kind = decode_varint(buf).map_err(protobuf)? as i32;
            }
            4 => {
                expect(wire_type, WireType::LengthDelimited)?;
                view.attributes.push(label(delimited(buf)?)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(view)
}

impl<'a> MetricBatchView<'a> {
    /// Decodes `payload` and checks it as [`MetricBatch::from_payload`] does.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut resource_view = None;
        let mut samples = Vec::new();
        let mut labels = Vec::new();
        fields(payload, |tag, wire_type, buf| {
            match tag {
                1 => {
                    expect(wire_type, WireType::LengthDelimited)?;
                    resource_view = Some(resource(delimited(buf)?)?);
                }
                2 => {
                    expect(wire_type, WireType::LengthDelimited)?;
                    samples.push(sample_view(delimited(buf)?, &mut labels)?);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let resource = resource_view.ok_or_else(|| invalid("missing resource"))?;
        if resource.id.is_empty() {
            return Err(invalid("empty resource id"));
        }
        if samples.is_empty() {
            return Err(invalid("no samples"));
        }
        for (index, sample) in samples.iter().enumerate() {
            if sample.name.is_empty() {
                return Err(invalid(format!("sample {index} has no name")));
            }
            if sample.time_unix_nano <= 0 {
                return Err(invalid(format!(
                    "sample {index} (`{}`) has no timestamp",
                    sample.name
                )));
            }
            match sample.value {
                None => {
                    return Err(invalid(format!(
                        "sample {index} (`{}`) has no value",
                        sample.name
                    )));
                }
                Some(sample::Value::Gauge(value)) if !value.is_finite() => {
                    return Err(invalid(format!(
                        "sample {index} (`{}`) has a non-finite gauge",
                        sample.name
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            resource,
            samples,
            labels,
        })
    }

    /// The labels of `sample`, one of this batch's samples.
    pub fn labels(&self, sample: &SampleView<'a>) -> &[LabelView<'a>] {
        &self.labels[sample.labels_start as usize..sample.labels_end as usize]
    }
}

fn sample_view<'a>(
    bytes: &'a [u8],
    labels: &mut Vec<LabelView<'a>>,
) -> Result<SampleView<'a>, DecodeError> {
    let labels_start = labels.len() as u32;
    let mut view = SampleView {
        name: "",
        labels_start,
        labels_end: labels_start,
        kind: 0,
        time_unix_nano: 0,
        value: None,
        value_type: 0,
        unit: "",
        metric_set: "",
    };
    fields(bytes, |tag, wire_type, buf| {
        match tag {
            1 | 8 | 9 => {
                expect(wire_type, WireType::LengthDelimited)?;
                let value = text("Sample", delimited(buf)?)?;
                match tag {
                    1 => view.name = value,
                    8 => view.unit = value,
                    _ => view.metric_set = value,
                }
            }
            2 => {
                expect(wire_type, WireType::LengthDelimited)?;
                labels.push(label(delimited(buf)?)?);
            }
            3 | 4 | 5 | 7 => {
                expect(wire_type, WireType::Varint)?;
                let value = decode_varint(buf).map_err(protobuf)?;
                match tag {
                    3 => view.kind = value as i32,
                    4 => view.time_unix_nano = value as i64,
                    5 => view.value = Some(sample::Value::Counter(value)),
                    _ => view.value_type = value as i32,
                }
            }
            6 => {
                expect(wire_type, WireType::SixtyFourBit)?;
                if buf.remaining() < 8 {
                    return Err(malformed("buffer underflow"));
                }
                view.value = Some(sample::Value::Gauge(buf.get_f64_le()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    view.labels_end = labels.len() as u32;
    Ok(view)
}

/// Writes the gauge samples of derived batches straight into protobuf bytes: one
/// batch per [`DerivedBatchWriter::begin`], a resource copied from the input as
/// encoded, samples from borrowed text.
#[derive(Debug, Default)]
pub struct DerivedBatchWriter {
    /// The encoded batch being written.
    pub bytes: Vec<u8>,
    samples: usize,
}

/// A derived gauge sample to write.
#[derive(Debug, Clone, Copy)]
pub struct GaugeSample<'s, 'a> {
    pub name: &'s str,
    pub labels: &'s [LabelView<'a>],
    /// A label of `labels` to leave out (the one a share summed away).
    pub without_label: Option<&'s str>,
    pub time_unix_nano: i64,
    pub value: f64,
    pub unit: &'s str,
    pub metric_set: &'s str,
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        encoded_len_varint(u64::from(tag << 3))
            + encoded_len_varint(value.len() as u64)
            + value.len()
    }
}

fn put_string(tag: u32, value: &str, out: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }
}

fn label_len(pair: &LabelView<'_>) -> usize {
    string_len(1, pair.name) + string_len(2, pair.value)
}

impl DerivedBatchWriter {
    /// Starts a new batch of `resource` (as it was encoded), dropping what was written.
    pub fn begin(&mut self, resource: &ResourceView<'_>) {
        self.bytes.clear();
        self.samples = 0;
        encode_key(1, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(resource.encoded.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(resource.encoded);
    }

    /// Appends one gauge sample (kind gauge, value type float).
    pub fn push(&mut self, sample: &GaugeSample<'_, '_>) {
        let kept = || {
            sample
                .labels
                .iter()
                .filter(move |pair| Some(pair.name) != sample.without_label)
        };
        let labels_len: usize = kept()
            .map(|pair| {
                let len = label_len(pair);
                1 + encoded_len_varint(len as u64) + len
            })
            .sum();
        let time = sample.time_unix_nano as u64;
        let length = string_len(1, sample.name)
            + labels_len
            + 2
            + if time == 0 {
                0
            } else {
                1 + encoded_len_varint(time)
            }
            + 9
            + 2
            + string_len(8, sample.unit)
            + string_len(9, sample.metric_set);
        let out = &mut self.bytes;
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(length as u64, out);
        put_string(1, sample.name, out);
        for pair in kept() {
            encode_key(2, WireType::LengthDelimited, out);
            encode_varint(label_len(pair) as u64, out);
            put_string(1, pair.name, out);
            put_string(2, pair.value, out);
        }
        encode_key(3, WireType::Varint, out);
        encode_varint(MetricKind::Gauge as u64, out);
        if time != 0 {
            encode_key(4, WireType::Varint, out);
            encode_varint(time, out);
        }
        encode_key(6, WireType::SixtyFourBit, out);
        out.extend_from_slice(&sample.value.to_le_bytes());
        encode_key(7, WireType::Varint, out);
        encode_varint(ValueType::Float as u64, out);
        put_string(8, sample.unit, out);
        put_string(9, sample.metric_set, out);
        self.samples += 1;
    }

    /// Samples written into the current batch.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Finishes the batch with its producer; `None` when no sample was written.
    pub fn finish(&mut self, producer: &str) -> Option<&[u8]> {
        if self.samples == 0 {
            return None;
        }
        put_string(3, producer, &mut self.bytes);
        Some(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::label as owned_label;
    use crate::v1::{Label, Resource, Sample};
    use proptest::prelude::*;

    fn arbitrary_batch() -> impl Strategy<Value = MetricBatch> {
        let text = "[a-zA-Z0-9._é-]{0,12}";
        let labels = prop::collection::vec((text, text), 0..4);
        let value = prop_oneof![
            any::<u64>().prop_map(sample::Value::Counter),
            (-1e300f64..1e300).prop_map(sample::Value::Gauge),
        ];
        let sample = (
            "[a-z.]{1,20}",
            labels.clone(),
            0i32..3,
            1i64..i64::MAX,
            value,
            0i32..7,
            text,
            text,
        )
            .prop_map(
                |(name, labels, kind, time, value, value_type, unit, metric_set)| Sample {
                    name,
                    labels: labels.into_iter().map(|(n, v)| owned_label(n, v)).collect(),
                    kind,
                    time_unix_nano: time,
                    value: Some(value),
                    value_type,
                    unit,
                    metric_set,
                },
            );
        (
            "[a-z0-9-]{1,12}",
            0i32..4,
            text,
            labels,
            prop::collection::vec(sample, 1..8),
        )
            .prop_map(|(id, kind, host_name, attributes, samples)| MetricBatch {
                resource: Some(Resource {
                    id,
                    kind,
                    host_name,
                    attributes: attributes
                        .into_iter()
                        .map(|(n, v)| owned_label(n, v))
                        .collect(),
                }),
                samples,
                producer: "test".into(),
            })
    }

    fn owned(labels: &[LabelView<'_>]) -> Vec<Label> {
        labels
            .iter()
            .map(|pair| owned_label(pair.name, pair.value))
            .collect()
    }

    proptest! {
        #[test]
        fn the_view_reads_what_prost_wrote(batch in arbitrary_batch()) {
            let payload = batch.to_payload();
            let view = MetricBatchView::decode(&payload).unwrap();
            let resource = batch.resource.as_ref().unwrap();
            prop_assert_eq!(view.resource.id, resource.id.as_str());
            prop_assert_eq!(view.resource.kind, resource.kind);
            prop_assert_eq!(view.resource.host_name, resource.host_name.as_str());
            prop_assert_eq!(owned(&view.resource.attributes), resource.attributes.clone());
            prop_assert_eq!(view.samples.len(), batch.samples.len());
            for (read, written) in view.samples.iter().zip(&batch.samples) {
                prop_assert_eq!(read.name, written.name.as_str());
                prop_assert_eq!(owned(view.labels(read)), written.labels.clone());
                prop_assert_eq!(read.kind, written.kind);
                prop_assert_eq!(read.time_unix_nano, written.time_unix_nano);
                prop_assert_eq!(read.value, written.value);
                prop_assert_eq!(read.value_type, written.value_type);
                prop_assert_eq!(read.unit, written.unit.as_str());
                prop_assert_eq!(read.metric_set, written.metric_set.as_str());
            }
        }

        #[test]
        fn the_writer_writes_what_prost_would(batch in arbitrary_batch(), drop_first in any::<bool>()) {
            let payload = batch.to_payload();
            let view = MetricBatchView::decode(&payload).unwrap();
            let mut writer = DerivedBatchWriter::default();
            writer.begin(&view.resource);
            let mut expected = MetricBatch {
                resource: batch.resource.clone(),
                samples: Vec::new(),
                producer: "derive".into(),
            };
            for (read, written) in view.samples.iter().zip(&batch.samples) {
                let without = if drop_first { written.labels.first().map(|l| l.name.as_str()) } else { None };
                writer.push(&GaugeSample {
                    name: read.name,
                    labels: view.labels(read),
                    without_label: without,
                    time_unix_nano: read.time_unix_nano,
                    value: 0.5,
                    unit: read.unit,
                    metric_set: read.metric_set,
                });
                expected.samples.push(Sample {
                    labels: written.labels.iter().filter(|l| Some(l.name.as_str()) != without).cloned().collect(),
                    kind: MetricKind::Gauge as i32,
                    value: Some(sample::Value::Gauge(0.5)),
                    value_type: ValueType::Float as i32,
                    ..written.clone()
                });
            }
            let bytes = writer.finish("derive").unwrap().to_vec();
            prop_assert_eq!(MetricBatch::from_payload(&bytes).unwrap(), expected.clone());
            prop_assert_eq!(bytes, expected.to_payload());
        }
    }

    #[test]
    fn broken_payloads_get_the_codecs_messages() {
        let error = MetricBatchView::decode(b"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid vigil.v1.MetricBatch: missing resource"
        );
        let error = MetricBatchView::decode(b"\x12\xff\x01garbage").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("not a protobuf vigil.v1.MetricBatch"),
            "{error}"
        );
        let batch = MetricBatch {
            resource: Some(Resource {
                id: "r".into(),
                ..Resource::default()
            }),
            samples: vec![Sample {
                name: "x".into(),
                time_unix_nano: 1,
                value: Some(sample::Value::Gauge(f64::NAN)),
                ..Sample::default()
            }],
            producer: String::new(),
        };
        assert_eq!(
            MetricBatchView::decode(&batch.to_payload())
                .unwrap_err()
                .to_string(),
            "invalid vigil.v1.MetricBatch: sample 0 (`x`) has a non-finite gauge"
        );
        let mut invalid_text = MetricBatch {
            samples: vec![Sample {
                value: Some(sample::Value::Gauge(1.0)),
                ..batch.samples[0].clone()
            }],
            ..batch
        }
        .to_payload();
        let at = invalid_text.iter().rposition(|b| *b == b'x').unwrap();
        invalid_text[at] = 0xff;
        assert!(
            MetricBatchView::decode(&invalid_text)
                .unwrap_err()
                .to_string()
                .contains("invalid UTF-8"),
        );
    }
}

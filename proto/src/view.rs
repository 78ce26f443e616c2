//! Borrowing views of metric batches, and a writer of derived batches: a stage
//! that reads every sample once and writes new ones (derive) decodes names,
//! labels and metric sets as `&str` into the payload, and writes its output
//! straight into protobuf bytes, instead of allocating and freeing a `String` for
//! each.
//!
//! The view reads every payload as prost reads it into a [`MetricBatch`]: a
//! singular field that occurs twice takes its last value, a resource that occurs
//! twice is the merge of both, groups of unknown fields nest no deeper than
//! prost allows, and the same [`limits`](crate::limits) are checked, so a
//! message a stage reads through the view is accepted, refused (with the same
//! reason) and understood exactly as by a stage that decodes it with prost. The
//! writer's bytes decode into exactly the [`MetricBatch`] prost would have
//! encoded. Both are tested against prost, the view on mutated payloads too.

use crate::codec::{DecodeError, Payload};
use crate::limits;
use crate::v1::{MetricBatch, MetricKind, ValueType, sample};
use prost::bytes::Buf;
use prost::encoding::{
    WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
};

const KIND: &str = <MetricBatch as Payload>::KIND;

/// How deep prost lets groups of unknown fields nest in a top-level message
/// (its recursion limit); each level of message nesting uses one.
const RECURSION_LIMIT: u32 = 100;

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
    /// The resource message as it was on the wire: each occurrence of the field,
    /// in order. Their concatenation encodes the merged resource.
    encoded: Vec<&'a [u8]>,
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
    pub producer: &'a str,
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

/// Skips a field the view does not read, as prost's `skip_field` does with
/// `depth` levels of recursion left: prost's own context cannot be handed a
/// depth, and a view that allowed deeper groups would accept what prost refuses.
fn skip(wire_type: WireType, tag: u32, buf: &mut &[u8], depth: u32) -> Result<(), DecodeError> {
    if depth == 0 {
        return Err(malformed("recursion limit reached"));
    }
    let length = match wire_type {
        WireType::Varint => decode_varint(buf).map(|_| 0).map_err(protobuf)?,
        WireType::ThirtyTwoBit => 4,
        WireType::SixtyFourBit => 8,
        WireType::LengthDelimited => decode_varint(buf).map_err(protobuf)?,
        WireType::StartGroup => loop {
            let (inner_tag, inner_wire_type) = decode_key(buf).map_err(protobuf)?;
            if inner_wire_type == WireType::EndGroup {
                if inner_tag != tag {
                    return Err(malformed("unexpected end group tag"));
                }
                break 0;
            }
            skip(inner_wire_type, inner_tag, buf, depth - 1)?;
        },
        WireType::EndGroup => return Err(malformed("unexpected end group tag")),
    };
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= buf.len())
        .ok_or_else(|| malformed("buffer underflow"))?;
    buf.advance(length);
    Ok(())
}

/// Walks the fields of a message nested `depth` levels of recursion below prost's
/// limit, handing each (tag, wire type) to `field`, which returns `false` for
/// fields it does not read (they are skipped).
fn fields<'a>(
    mut buf: &'a [u8],
    depth: u32,
    mut field: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(protobuf)?;
        if !field(tag, wire_type, &mut buf)? {
            skip(wire_type, tag, &mut buf, depth)?;
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

/// Reads a `Label` nested in a message at `depth`.
fn label(bytes: &[u8], depth: u32) -> Result<LabelView<'_>, DecodeError> {
    let mut view = LabelView {
        name: "",
        value: "",
    };
    fields(bytes, depth - 1, |tag, wire_type, buf| {
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

/// Merges one occurrence of the resource field into `view`, as prost does: the
/// fields it sets replace earlier values, its attributes are appended.
fn merge_resource<'a>(view: &mut ResourceView<'a>, bytes: &'a [u8]) -> Result<(), DecodeError> {
    view.encoded.push(bytes);
    let depth = RECURSION_LIMIT - 1;
    fields(bytes, depth, |tag, wire_type, buf| {
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
                view.attributes.push(label(delimited(buf)?, depth)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

impl<'a> MetricBatchView<'a> {
    /// Decodes `payload` and checks it as [`MetricBatch::from_payload`] does.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut resource = None;
        let mut samples = Vec::new();
        let mut labels = Vec::new();
        let mut producer = "";
        fields(payload, RECURSION_LIMIT, |tag, wire_type, buf| {
            match tag {
                1 => {
                    expect(wire_type, WireType::LengthDelimited)?;
                    let bytes = delimited(buf)?;
                    merge_resource(resource.get_or_insert_default(), bytes)?;
                }
                2 => {
                    expect(wire_type, WireType::LengthDelimited)?;
                    samples.push(sample_view(delimited(buf)?, &mut labels)?);
                }
                3 => {
                    expect(wire_type, WireType::LengthDelimited)?;
                    producer = text("MetricBatch", delimited(buf)?)?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let batch = Self {
            resource: resource.ok_or_else(|| invalid("missing resource"))?,
            samples,
            producer,
            labels,
        };
        batch.check().map_err(invalid)?;
        Ok(batch)
    }

    /// [`MetricBatch`]'s [`Payload::check`], on the view.
    fn check(&self) -> Result<(), String> {
        let resource = &self.resource;
        limits::resource(resource.id, resource.attributes.iter().map(|a| a.name))?;
        if self.samples.is_empty() {
            return Err("no samples".into());
        }
        for (index, sample) in self.samples.iter().enumerate() {
            limits::sample(
                index,
                sample.name,
                sample.time_unix_nano,
                sample.value.is_some(),
                self.labels(sample).iter().map(|label| label.name),
            )?;
        }
        Ok(())
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
    let depth = RECURSION_LIMIT - 1;
    fields(bytes, depth, |tag, wire_type, buf| {
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
                labels.push(label(delimited(buf)?, depth)?);
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
            10 => {
                expect(wire_type, WireType::SixtyFourBit)?;
                if buf.remaining() < 8 {
                    return Err(malformed("buffer underflow"));
                }
                view.value = Some(sample::Value::FloatCounter(buf.get_f64_le()));
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
    /// Starts a new batch of `resource` (as it was encoded: a resource that
    /// occurred more than once is written once, its occurrences concatenated,
    /// which decodes as their merge), dropping what was written.
    pub fn begin(&mut self, resource: &ResourceView<'_>) {
        self.bytes.clear();
        self.samples = 0;
        let length: usize = resource.encoded.iter().map(|part| part.len()).sum();
        encode_key(1, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(length as u64, &mut self.bytes);
        for part in &resource.encoded {
            self.bytes.extend_from_slice(part);
        }
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
mod tests;

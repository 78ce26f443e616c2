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
mod tests {
    use super::*;
    use crate::labels::label as owned_label;
    use crate::limits::LATEST_UNIX_NANO;
    use crate::v1::{Label, Resource, Sample};
    use proptest::prelude::*;
    use proptest::sample::Index;
    use prost::Message;

    /// What the generated batches are made of; [`VALID`] makes batches every check
    /// accepts, [`HOSTILE`] also makes what the checks refuse.
    #[derive(Clone, Copy)]
    struct Makings {
        sample_names: &'static str,
        label_names: &'static str,
        hostile: bool,
    }

    const VALID: Makings = Makings {
        sample_names: "[a-z.]{1,20}",
        label_names: "[a-zA-Z0-9._é-]{1,12}",
        hostile: false,
    };

    const HOSTILE: Makings = Makings {
        sample_names: "[a-z.]{0,6}",
        label_names: "[a-z]{0,3}",
        hostile: true,
    };

    fn times(makings: Makings) -> BoxedStrategy<i64> {
        if makings.hostile {
            prop_oneof![
                4 => 1..=LATEST_UNIX_NANO,
                1 => Just(0),
                1 => i64::MIN..0,
                1 => LATEST_UNIX_NANO..=i64::MAX,
            ]
            .boxed()
        } else {
            (1..=LATEST_UNIX_NANO).boxed()
        }
    }

    fn values(makings: Makings) -> BoxedStrategy<Option<sample::Value>> {
        let value = prop_oneof![
            any::<u64>().prop_map(sample::Value::Counter),
            (-1e300f64..1e300).prop_map(sample::Value::Gauge),
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
                .prop_map(sample::Value::Gauge),
        ];
        if makings.hostile {
            prop::option::weighted(0.9, value).boxed()
        } else {
            value.prop_map(Some).boxed()
        }
    }

    fn labels(makings: Makings) -> impl Strategy<Value = Vec<Label>> {
        let text = "[a-zA-Z0-9._é-]{0,12}";
        prop::collection::vec((makings.label_names, text), 0..4).prop_map(|labels| {
            labels
                .into_iter()
                .map(|(name, value)| owned_label(name, value))
                .collect()
        })
    }

    fn samples(makings: Makings) -> impl Strategy<Value = Sample> {
        let text = "[a-zA-Z0-9._é-]{0,12}";
        (
            makings.sample_names,
            labels(makings),
            0i32..3,
            times(makings),
            values(makings),
            0i32..7,
            text,
            text,
        )
            .prop_map(
                |(name, labels, kind, time_unix_nano, value, value_type, unit, metric_set)| {
                    Sample {
                        name,
                        labels,
                        kind,
                        time_unix_nano,
                        value,
                        value_type,
                        unit,
                        metric_set,
                    }
                },
            )
    }

    fn resources(makings: Makings) -> impl Strategy<Value = Resource> {
        let ids = if makings.hostile {
            "[a-z0-9-]{0,4}"
        } else {
            "[a-z0-9-]{1,12}"
        };
        (ids, 0i32..4, "[a-zA-Z0-9._é-]{0,12}", labels(makings)).prop_map(
            |(id, kind, host_name, attributes)| Resource {
                id,
                kind,
                host_name,
                attributes,
            },
        )
    }

    fn batches(makings: Makings) -> impl Strategy<Value = MetricBatch> {
        (
            resources(makings),
            prop::collection::vec(samples(makings), 1..8),
            "[a-z]{0,8}",
        )
            .prop_map(|(resource, samples, producer)| MetricBatch {
                resource: Some(resource),
                samples,
                producer,
            })
    }

    fn arbitrary_batch() -> impl Strategy<Value = MetricBatch> {
        batches(VALID)
    }

    fn owned(labels: &[LabelView<'_>]) -> Vec<Label> {
        labels
            .iter()
            .map(|pair| owned_label(pair.name, pair.value))
            .collect()
    }

    /// A sample value with gauges compared by their bits, so that NaN equals NaN.
    fn bits(value: Option<sample::Value>) -> Option<(bool, u64)> {
        value.map(|value| match value {
            sample::Value::Counter(count) => (false, count),
            sample::Value::Gauge(gauge) => (true, gauge.to_bits()),
        })
    }

    /// The top-level fields of `payload` as byte ranges, as far as it parses.
    fn field_spans(payload: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut spans = Vec::new();
        let mut buf = payload;
        while !buf.is_empty() {
            let start = payload.len() - buf.len();
            let Ok((tag, wire_type)) = decode_key(&mut buf) else {
                break;
            };
            if skip(wire_type, tag, &mut buf, RECURSION_LIMIT).is_err() {
                break;
            }
            spans.push(start..payload.len() - buf.len());
        }
        spans
    }

    /// One encoded field: the key, then the content.
    fn field(tag: u32, wire_type: WireType, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(tag, wire_type, &mut out);
        if wire_type == WireType::LengthDelimited {
            encode_varint(content.len() as u64, &mut out);
        }
        out.extend_from_slice(content);
        out
    }

    fn varint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(value, &mut out);
        out
    }

    /// `levels` groups of an unknown field, each inside the one before.
    fn nested_groups(levels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..levels {
            encode_key(15, WireType::StartGroup, &mut out);
        }
        for _ in 0..levels {
            encode_key(15, WireType::EndGroup, &mut out);
        }
        out
    }

    /// Fields a producer (or an attacker) may add to a batch: a second resource or
    /// producer, a sample whose scalars occur twice, unknown fields and groups,
    /// known fields with the wrong wire type, text that is not UTF-8.
    fn extra_fields() -> impl Strategy<Value = Vec<u8>> {
        let scalar_again = prop_oneof![
            (1..=LATEST_UNIX_NANO).prop_map(|time| field(
                4,
                WireType::Varint,
                &varint(time as u64)
            )),
            any::<u64>().prop_map(|count| field(5, WireType::Varint, &varint(count))),
            any::<f64>().prop_map(|gauge| field(6, WireType::SixtyFourBit, &gauge.to_le_bytes())),
            "[a-z]{0,3}".prop_map(|name| field(1, WireType::LengthDelimited, name.as_bytes())),
            (0u64..8).prop_map(|kind| field(3, WireType::Varint, &varint(kind))),
        ];
        prop_oneof![
            resources(HOSTILE).prop_map(|resource| {
                field(1, WireType::LengthDelimited, &resource.encode_to_vec())
            }),
            "[a-z]{0,8}".prop_map(|producer| field(
                3,
                WireType::LengthDelimited,
                producer.as_bytes()
            )),
            Just(field(3, WireType::LengthDelimited, b"\xff\xfe")),
            (samples(VALID), prop::collection::vec(scalar_again, 1..3)).prop_map(
                |(sample, again)| {
                    let mut content = sample.encode_to_vec();
                    content.extend(again.concat());
                    field(2, WireType::LengthDelimited, &content)
                }
            ),
            (16u32..40, any::<u64>()).prop_map(|(tag, value)| field(
                tag,
                WireType::Varint,
                &varint(value)
            )),
            (16u32..40, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(tag, bytes)| field(
                tag,
                WireType::LengthDelimited,
                &bytes
            )),
            (95usize..106).prop_map(nested_groups),
            (1u32..4, any::<u64>()).prop_map(|(tag, value)| field(
                tag,
                WireType::Varint,
                &varint(value)
            )),
        ]
    }

    /// A change to a payload's bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(Index, u8),
        Insert(Index, Vec<u8>),
        Delete(Index, usize),
        Truncate(Index),
        /// Appends a copy of one of the payload's own fields.
        Duplicate(Index),
        /// Inserts a whole field, at the end or anywhere.
        Add(Option<Index>, Vec<u8>),
    }

    fn mutations() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            1 => (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
            1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..4))
                .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            1 => (any::<Index>(), 1usize..4).prop_map(|(at, length)| Mutation::Delete(at, length)),
            1 => any::<Index>().prop_map(Mutation::Truncate),
            1 => any::<Index>().prop_map(Mutation::Duplicate),
            3 => (prop::option::of(any::<Index>()), extra_fields())
                .prop_map(|(at, bytes)| Mutation::Add(at, bytes)),
        ]
    }

    fn mutate(payload: &mut Vec<u8>, mutation: &Mutation) {
        let len = payload.len();
        match mutation {
            Mutation::Flip(at, mask) if len > 0 => payload[at.index(len)] ^= mask,
            Mutation::Insert(at, bytes) => {
                let at = at.index(len + 1);
                payload.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(at, length) if len > 0 => {
                let at = at.index(len);
                payload.drain(at..(at + length).min(len));
            }
            Mutation::Truncate(at) => payload.truncate(at.index(len + 1)),
            Mutation::Duplicate(at) => {
                let spans = field_spans(payload);
                if !spans.is_empty() {
                    let span = spans[at.index(spans.len())].clone();
                    payload.extend_from_within(span);
                }
            }
            Mutation::Add(at, bytes) => {
                let at = at.as_ref().map_or(len, |at| at.index(len + 1));
                payload.splice(at..at, bytes.iter().copied());
            }
            Mutation::Flip(..) | Mutation::Delete(..) => {}
        }
    }

    /// Whether prost and the view agree on `payload`: both refuse it (for the
    /// same reason when it decodes), or both accept it and read the same batch.
    fn decoders_agree(payload: &[u8]) -> Result<bool, TestCaseError> {
        let by_prost = MetricBatch::from_payload(payload);
        let by_view = MetricBatchView::decode(payload);
        let (batch, view) = match (by_prost, by_view) {
            (Ok(batch), Ok(view)) => (batch, view),
            (
                Err(DecodeError::Invalid { reason: prost, .. }),
                Err(DecodeError::Invalid { reason: view, .. }),
            ) => {
                prop_assert_eq!(prost, view);
                return Ok(false);
            }
            (
                Err(DecodeError::Protobuf { .. }),
                Err(DecodeError::Protobuf { .. } | DecodeError::Malformed { .. }),
            ) => {
                return Ok(false);
            }
            (prost, view) => {
                return Err(TestCaseError::fail(format!(
                    "prost: {:?}\nview: {:?}",
                    prost.map(|_| "accepted"),
                    view.map(|_| "accepted")
                )));
            }
        };
        let resource = batch.resource.as_ref().unwrap();
        prop_assert_eq!(view.resource.id, resource.id.as_str());
        prop_assert_eq!(view.resource.kind, resource.kind);
        prop_assert_eq!(view.resource.host_name, resource.host_name.as_str());
        prop_assert_eq!(
            owned(&view.resource.attributes),
            resource.attributes.clone()
        );
        prop_assert_eq!(view.producer, batch.producer.as_str());
        prop_assert_eq!(view.samples.len(), batch.samples.len());
        for (read, decoded) in view.samples.iter().zip(&batch.samples) {
            prop_assert_eq!(read.name, decoded.name.as_str());
            prop_assert_eq!(owned(view.labels(read)), decoded.labels.clone());
            prop_assert_eq!(read.kind, decoded.kind);
            prop_assert_eq!(read.time_unix_nano, decoded.time_unix_nano);
            prop_assert_eq!(bits(read.value), bits(decoded.value));
            prop_assert_eq!(read.value_type, decoded.value_type);
            prop_assert_eq!(read.unit, decoded.unit.as_str());
            prop_assert_eq!(read.metric_set, decoded.metric_set.as_str());
        }
        // What derive writes of the resource is what prost read.
        let mut writer = DerivedBatchWriter::default();
        writer.begin(&view.resource);
        writer.push(&GaugeSample {
            name: "x",
            labels: &[],
            without_label: None,
            time_unix_nano: 1,
            value: 0.0,
            unit: "",
            metric_set: "",
        });
        let written = MetricBatch::from_payload(writer.finish("derive").unwrap()).unwrap();
        prop_assert_eq!(written.resource.as_ref(), Some(resource));
        Ok(true)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn prost_and_the_view_agree_on_mutated_payloads(
            batch in prop_oneof![batches(VALID), batches(HOSTILE)],
            mutations in prop::collection::vec(mutations(), 0..4),
        ) {
            let mut payload = batch.to_payload();
            for mutation in &mutations {
                mutate(&mut payload, mutation);
            }
            decoders_agree(&payload)?;
        }
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
            prop_assert_eq!(view.producer, batch.producer.as_str());
            prop_assert_eq!(view.samples.len(), batch.samples.len());
            for (read, written) in view.samples.iter().zip(&batch.samples) {
                prop_assert_eq!(read.name, written.name.as_str());
                prop_assert_eq!(owned(view.labels(read)), written.labels.clone());
                prop_assert_eq!(read.kind, written.kind);
                prop_assert_eq!(read.time_unix_nano, written.time_unix_nano);
                prop_assert_eq!(bits(read.value), bits(written.value));
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

    fn one_sample_batch(value: f64) -> MetricBatch {
        MetricBatch {
            resource: Some(Resource {
                id: "r".into(),
                ..Resource::default()
            }),
            samples: vec![Sample {
                name: "x".into(),
                time_unix_nano: 1,
                value: Some(sample::Value::Gauge(value)),
                ..Sample::default()
            }],
            producer: String::new(),
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
        let mut hostile = one_sample_batch(1.0);
        hostile.samples[0].time_unix_nano = i64::MAX;
        let expected = "invalid vigil.v1.MetricBatch: sample 0 (`x`) has `time_unix_nano` 9223372036854775807, after 2200-01-01 (times are nanoseconds since the Unix epoch)";
        let payload = hostile.to_payload();
        assert_eq!(
            MetricBatchView::decode(&payload).unwrap_err().to_string(),
            expected
        );
        assert_eq!(
            MetricBatch::from_payload(&payload).unwrap_err().to_string(),
            expected
        );
        let mut invalid_text = one_sample_batch(1.0).to_payload();
        let at = invalid_text.iter().rposition(|b| *b == b'x').unwrap();
        invalid_text[at] = 0xff;
        assert!(
            MetricBatchView::decode(&invalid_text)
                .unwrap_err()
                .to_string()
                .contains("invalid UTF-8"),
        );
    }

    #[test]
    fn gauges_may_be_nan_or_infinite() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let payload = one_sample_batch(value).to_payload();
            let view = MetricBatchView::decode(&payload).unwrap();
            assert_eq!(
                bits(view.samples[0].value),
                bits(Some(sample::Value::Gauge(value)))
            );
            assert!(MetricBatch::from_payload(&payload).is_ok());
        }
    }

    // A resource field that occurs twice was read by the view as the last one
    // alone, by prost as the merge of both.
    #[test]
    fn a_resource_sent_twice_is_read_as_prost_merges_it() {
        let mut payload = one_sample_batch(1.0).to_payload();
        let second = Resource {
            host_name: "web-1".into(),
            attributes: vec![owned_label("site", "ams")],
            ..Resource::default()
        };
        payload.extend(field(1, WireType::LengthDelimited, &second.encode_to_vec()));
        let view = MetricBatchView::decode(&payload).unwrap();
        assert_eq!(view.resource.id, "r");
        assert_eq!(view.resource.host_name, "web-1");
        assert_eq!(owned(&view.resource.attributes), second.attributes);
        assert!(decoders_agree(&payload).unwrap());
    }

    // The view skipped the producer, so a producer that is not UTF-8 (or not
    // text at all) passed the view and failed prost.
    #[test]
    fn a_producer_that_is_not_text_is_refused_by_both_decoders() {
        let valid = one_sample_batch(1.0).to_payload();
        for producer in [
            field(3, WireType::LengthDelimited, b"\xff"),
            field(3, WireType::Varint, &varint(7)),
        ] {
            let payload = [valid.as_slice(), &producer].concat();
            assert!(MetricBatchView::decode(&payload).is_err());
            assert!(!decoders_agree(&payload).unwrap());
        }
        let payload = [
            valid.as_slice(),
            &field(3, WireType::LengthDelimited, b"agent"),
        ]
        .concat();
        assert_eq!(MetricBatchView::decode(&payload).unwrap().producer, "agent");
    }

    // The view skipped unknown groups inside a label with the whole recursion
    // limit, where prost has two levels fewer left.
    #[test]
    fn groups_nest_inside_a_label_only_as_deep_as_prost_allows() {
        let with_groups = |levels: usize| {
            let mut label = owned_label("a", "b").encode_to_vec();
            label.extend(nested_groups(levels));
            let mut sample = one_sample_batch(1.0).samples[0].encode_to_vec();
            sample.extend(field(2, WireType::LengthDelimited, &label));
            let mut batch = one_sample_batch(1.0);
            batch.samples.clear();
            let mut payload = batch.to_payload();
            payload.extend(field(2, WireType::LengthDelimited, &sample));
            payload
        };
        assert!(decoders_agree(&with_groups(98)).unwrap());
        let too_deep = with_groups(100);
        assert!(MetricBatchView::decode(&too_deep).is_err());
        assert!(!decoders_agree(&too_deep).unwrap());
    }
}

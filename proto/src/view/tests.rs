//! Unit tests of the parent module.

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
        (0f64..1e300).prop_map(sample::Value::FloatCounter),
        Just(sample::Value::FloatCounter(crate::staleness::stale_marker())),
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
            |(name, labels, kind, time_unix_nano, value, value_type, unit, metric_set)| Sample {
                name,
                labels,
                kind,
                time_unix_nano,
                value,
                value_type,
                unit,
                metric_set,
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

/// A sample value with floats compared by their bits, so that NaN equals NaN:
/// which member of the oneof (0 counter, 1 gauge, 2 float counter), and the bits.
fn bits(value: Option<sample::Value>) -> Option<(u8, u64)> {
    value.map(|value| match value {
        sample::Value::Counter(count) => (0, count),
        sample::Value::Gauge(gauge) => (1, gauge.to_bits()),
        sample::Value::FloatCounter(count) => (2, count.to_bits()),
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
        (1..=LATEST_UNIX_NANO).prop_map(|time| field(4, WireType::Varint, &varint(time as u64))),
        any::<u64>().prop_map(|count| field(5, WireType::Varint, &varint(count))),
        any::<f64>().prop_map(|gauge| field(6, WireType::SixtyFourBit, &gauge.to_le_bytes())),
        "[a-z]{0,3}".prop_map(|name| field(1, WireType::LengthDelimited, name.as_bytes())),
        (0u64..8).prop_map(|kind| field(3, WireType::Varint, &varint(kind))),
    ];
    prop_oneof![
        resources(HOSTILE).prop_map(|resource| {
            field(1, WireType::LengthDelimited, &resource.encode_to_vec())
        }),
        "[a-z]{0,8}".prop_map(|producer| field(3, WireType::LengthDelimited, producer.as_bytes())),
        Just(field(3, WireType::LengthDelimited, b"\xff\xfe")),
        (samples(VALID), prop::collection::vec(scalar_again, 1..3)).prop_map(|(sample, again)| {
            let mut content = sample.encode_to_vec();
            content.extend(again.concat());
            field(2, WireType::LengthDelimited, &content)
        }),
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

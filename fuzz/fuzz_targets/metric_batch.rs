//! Fuzzes both decoders of `MetricBatch` payloads, prost's and the borrowing view
//! the derive and alert stages read with: neither panics, they accept and refuse
//! the same payloads (for the same reason when the bytes are protobuf), they read
//! the same values, and what derive writes of an accepted resource is what prost
//! read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricBatch, sample};
use vigil_proto::view::{DerivedBatchWriter, GaugeSample, LabelView, MetricBatchView};
use vigil_proto::{DecodeError, Payload};

fn owned(labels: &[LabelView<'_>]) -> Vec<Label> {
    labels
        .iter()
        .map(|pair| label(pair.name, pair.value))
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

fn assert_same_batch(view: &MetricBatchView<'_>, batch: &MetricBatch) {
    let resource = batch
        .resource
        .as_ref()
        .expect("an accepted batch has a resource");
    assert_eq!(view.resource.id, resource.id);
    assert_eq!(view.resource.kind, resource.kind);
    assert_eq!(view.resource.host_name, resource.host_name);
    assert_eq!(owned(&view.resource.attributes), resource.attributes);
    assert_eq!(view.producer, batch.producer);
    assert_eq!(view.samples.len(), batch.samples.len());
    for (read, decoded) in view.samples.iter().zip(&batch.samples) {
        assert_eq!(read.name, decoded.name);
        assert_eq!(owned(view.labels(read)), decoded.labels);
        assert_eq!(read.kind, decoded.kind);
        assert_eq!(read.time_unix_nano, decoded.time_unix_nano);
        assert_eq!(bits(read.value), bits(decoded.value));
        assert_eq!(read.value_type, decoded.value_type);
        assert_eq!(read.unit, decoded.unit);
        assert_eq!(read.metric_set, decoded.metric_set);
    }
    let mut writer = DerivedBatchWriter::default();
    writer.begin(&view.resource);
    writer.push(&GaugeSample {
        name: "derived",
        labels: view.labels(&view.samples[0]),
        without_label: None,
        time_unix_nano: view.samples[0].time_unix_nano,
        value: 0.5,
        unit: "",
        metric_set: "",
    });
    let written = writer.finish("fuzz").expect("one sample was written");
    let derived = MetricBatch::from_payload(written)
        .unwrap_or_else(|error| panic!("derive wrote a batch it cannot read: {error}"));
    assert_eq!(derived.resource.as_ref(), Some(resource));
    assert_eq!(derived.samples[0].labels, batch.samples[0].labels);
}

fuzz_target!(|payload: &[u8]| {
    let by_prost = vigil_fuzz::decode_and_round_trip::<MetricBatch>(payload);
    let by_view = MetricBatchView::decode(payload);
    match (by_prost, by_view) {
        (Some(batch), Ok(view)) => assert_same_batch(&view, &batch),
        (None, Err(view_error)) => {
            vigil_fuzz::assert_refusal_names_kind(&view_error, MetricBatch::KIND);
            match (MetricBatch::from_payload(payload), view_error) {
                (
                    Err(DecodeError::Invalid { reason: prost, .. }),
                    DecodeError::Invalid { reason: view, .. },
                ) => assert_eq!(prost, view, "the decoders refuse for different reasons"),
                (
                    Err(DecodeError::Protobuf { .. }),
                    DecodeError::Protobuf { .. } | DecodeError::Malformed { .. },
                ) => {}
                (prost, view) => panic!(
                    "the decoders refuse differently:\nprost: {:?}\nview: {view}",
                    prost.err().map(|error| error.to_string())
                ),
            }
        }
        (prost, view) => panic!(
            "one decoder accepts what the other refuses:\nprost: {}\nview: {:?}",
            if prost.is_some() {
                "accepted"
            } else {
                "refused"
            },
            view.map(|_| "accepted").map_err(|error| error.to_string())
        ),
    }
});

//! The samples of one collection, all stamped with the same time: what the host
//! and container collectors build, before `run` sends them as one `MetricBatch` to
//! the raw metrics topic.

use vigil_proto::v1::{Label, MetricKind, Sample, ValueType, sample};

/// Samples of one collection, all stamped with the same time.
#[derive(Debug)]
pub(crate) struct Samples {
    time_unix_nano: i64,
    samples: Vec<Sample>,
}

impl Samples {
    pub(crate) fn new(time_unix_nano: i64) -> Self {
        Self {
            time_unix_nano,
            samples: Vec::new(),
        }
    }

    /// Adds a point-in-time value.
    pub(crate) fn gauge(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        set: &str,
        labels: &[Label],
    ) {
        self.push(name, sample::Value::Gauge(value), unit, set, labels);
    }

    /// Adds a monotonically increasing count, carried as an unsigned 64-bit integer.
    pub(crate) fn counter(
        &mut self,
        name: &str,
        value: u64,
        unit: &str,
        set: &str,
        labels: &[Label],
    ) {
        self.push(name, sample::Value::Counter(value), unit, set, labels);
    }

    fn push(&mut self, name: &str, value: sample::Value, unit: &str, set: &str, labels: &[Label]) {
        let (kind, value_type) = match value {
            sample::Value::Counter(_) => (MetricKind::Counter, ValueType::Counter64),
            sample::Value::FloatCounter(_) => (MetricKind::Counter, ValueType::Float),
            sample::Value::Gauge(_) => (MetricKind::Gauge, ValueType::Float),
        };
        self.samples.push(Sample {
            name: name.to_owned(),
            labels: labels.to_vec(),
            kind: kind as i32,
            time_unix_nano: self.time_unix_nano,
            value: Some(value),
            value_type: value_type as i32,
            unit: unit.to_owned(),
            metric_set: set.to_owned(),
        });
    }

    pub(crate) fn into_vec(self) -> Vec<Sample> {
        self.samples
    }
}

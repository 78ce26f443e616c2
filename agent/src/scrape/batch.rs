//! From one scrape of one target to its metric batch, as Prometheus records a
//! scrape: the exposed samples with the target's labels, the series Prometheus
//! adds per target (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`),
//! and a staleness marker for every series the previous scrape had and this one
//! has not (all of them when the scrape failed).
//!
//! Names keep their underscores as exposed (`node_cpu_seconds_total`), counters
//! (and the buckets, sums and counts of histograms and summaries) are float
//! counters, everything else is a gauge. The metric set of every sample is the
//! target's `job`, so the samples of one job with one label set and one time make
//! one document in the index. The batch's resource is the target: its id is
//! `instance`, its attributes are the target's labels (`job`, `instance` and those
//! the configuration or relabelling gave it).

use super::exposition::{ExposedSample, ExpositionError, Format, ParseFailure, parse};
use std::collections::HashMap;
use std::time::Duration;
use vigil_proto::labels::label;
use vigil_proto::staleness::stale_marker;
use vigil_proto::v1::{
    Label, MetricBatch, MetricKind, Resource, ResourceKind, Sample, ValueType, sample,
};
use xxhash_rust::xxh3::Xxh3;

/// A target as scraped: its labels after relabelling and how its samples are
/// labelled and timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapedTarget {
    /// `job`, `instance` and the other target labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// An exposed label that clashes with a target label wins (otherwise it is
    /// kept as `exported_<name>`).
    pub honor_labels: bool,
    /// An exposed timestamp is the sample's time (otherwise the scrape's).
    pub honor_timestamps: bool,
    /// The most samples a scrape may expose; 0 for no limit.
    pub sample_limit: usize,
}

impl ScrapedTarget {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// Why a scrape gave no samples: the scrape source's error, or what was wrong
/// with the body.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeFailure {
    #[error("{0}")]
    Fetch(String),
    #[error("invalid exposition: {0}")]
    Exposition(#[from] ExpositionError),
    #[error("sample_limit exceeded: more than {0} samples")]
    SampleLimit(usize),
}

/// The series the previous scrape of a target gave, so that the next one knows
/// which disappeared.
#[derive(Debug, Default)]
pub struct PreviousSeries {
    /// The staleness marker of each series (its name, labels and kind), by a
    /// hash of name and labels.
    series: HashMap<u64, Sample>,
}

/// One scrape: when it started, how long it took, and what it returned.
#[derive(Debug)]
pub struct Scrape<'a> {
    pub started_unix_nano: i64,
    pub duration: Duration,
    pub body: Result<(Format, &'a str), ScrapeFailure>,
}

/// The batch of one scrape of `target`, and the failure when it failed. Updates
/// `previous` to this scrape's series.
pub fn scrape_batch(
    target: &ScrapedTarget,
    scrape: Scrape<'_>,
    previous: &mut PreviousSeries,
    producer: &str,
) -> (MetricBatch, Option<ScrapeFailure>) {
    let time = scrape.started_unix_nano;
    let job = target.label("job");
    let exposed = scrape
        .body
        .and_then(|(format, body)| exposed_samples(target, format, body, time, job));
    let (mut samples, failure) = match exposed {
        Ok(samples) => (samples, None),
        Err(failure) => (Vec::new(), Some(failure)),
    };
    let scraped = samples.len();
    let mut current = HashMap::with_capacity(samples.len());
    for sample in &samples {
        current.insert(series_hash(sample), marker_of(sample));
    }
    let ended = previous
        .series
        .iter()
        .filter(|(hash, _)| !current.contains_key(hash))
        .map(|(_, marker)| Sample {
            time_unix_nano: time,
            ..marker.clone()
        });
    let markers: Vec<Sample> = ended.collect();
    samples.extend(markers);
    previous.series = current;
    let report = |name: &str, value: f64| Sample {
        name: name.into(),
        kind: MetricKind::Gauge.into(),
        time_unix_nano: time,
        value: Some(sample::Value::Gauge(value)),
        value_type: ValueType::Float.into(),
        metric_set: job.into(),
        ..Sample::default()
    };
    samples.push(report("up", if failure.is_none() { 1.0 } else { 0.0 }));
    samples.push(report(
        "scrape_duration_seconds",
        scrape.duration.as_secs_f64(),
    ));
    samples.push(report("scrape_samples_scraped", scraped as f64));
    let instance = target.label("instance");
    let batch = MetricBatch {
        resource: Some(Resource {
            id: instance.into(),
            kind: ResourceKind::Host.into(),
            host_name: host_of(instance).into(),
            attributes: target
                .labels
                .iter()
                .map(|(name, value)| label(name.as_str(), value.as_str()))
                .collect(),
        }),
        samples,
        producer: producer.into(),
    };
    (batch, failure)
}

/// The host part of an `instance` (`host:port`, `[v6]:port`).
fn host_of(instance: &str) -> &str {
    if let Some(bracketed) = instance.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => instance,
    }
}

/// The samples of a body, as wire samples at `time` (or their own).
fn exposed_samples(
    target: &ScrapedTarget,
    format: Format,
    body: &str,
    time: i64,
    job: &str,
) -> Result<Vec<Sample>, ScrapeFailure> {
    let mut samples = Vec::new();
    let limit = target.sample_limit;
    parse(body, format, |exposed: ExposedSample<'_>| {
        if limit > 0 && samples.len() >= limit {
            return Err(ScrapeFailure::SampleLimit(limit));
        }
        samples.push(wire_sample(target, exposed, time, job));
        Ok(())
    })
    .map_err(|failure| match failure {
        ParseFailure::Malformed(error) => ScrapeFailure::Exposition(error),
        ParseFailure::Refused(refused) => refused,
    })?;
    Ok(samples)
}

fn wire_sample(target: &ScrapedTarget, exposed: ExposedSample<'_>, time: i64, job: &str) -> Sample {
    let counter = exposed.is_counter();
    let labels = exposed
        .labels
        .iter()
        .map(|(name, value)| {
            let clashes =
                !target.honor_labels && target.labels.iter().any(|(label, _)| label == name);
            if clashes {
                label(format!("exported_{name}"), value.as_ref())
            } else {
                label(*name, value.as_ref())
            }
        })
        .collect();
    let time = match exposed.timestamp_ms {
        Some(ms) if target.honor_timestamps => ms.saturating_mul(1_000_000),
        _ => time,
    };
    Sample {
        name: exposed.name.into(),
        labels,
        kind: if counter {
            MetricKind::Counter
        } else {
            MetricKind::Gauge
        }
        .into(),
        time_unix_nano: time,
        value: Some(if counter {
            sample::Value::FloatCounter(exposed.value)
        } else {
            sample::Value::Gauge(exposed.value)
        }),
        value_type: ValueType::Float.into(),
        unit: String::new(),
        metric_set: job.into(),
    }
}

/// A hash of a sample's name and labels: its series within the target.
fn series_hash(sample: &Sample) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(sample.name.as_bytes());
    for Label { name, value } in &sample.labels {
        hasher.update(&[0xff]);
        hasher.update(name.as_bytes());
        hasher.update(&[0xfe]);
        hasher.update(value.as_bytes());
    }
    hasher.digest()
}

/// The staleness marker of `sample`'s series, of the series' kind; its time is
/// set when the series is found gone.
fn marker_of(sample: &Sample) -> Sample {
    let value = match sample.value {
        Some(sample::Value::FloatCounter(_)) => sample::Value::FloatCounter(stale_marker()),
        _ => sample::Value::Gauge(stale_marker()),
    };
    Sample {
        value: Some(value),
        ..sample.clone()
    }
}

#[cfg(test)]
mod tests;

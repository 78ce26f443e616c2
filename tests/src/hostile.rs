//! Hostile messages for the stages' input topics: batches that decode as
//! protobuf but carry values no agent or stage would send (times outside
//! 1970..2200 or years ahead of the clock, `i64` extremes, unnamed samples and
//! labels, label sets far over the limit, `min` above `max`, NaN and infinities
//! where the contract forbids them), each with the reason a stage must give when
//! it dead-letters it; and the reading of topics back, to see what a stage made
//! of them.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::limits::{LATEST_UNIX_NANO, MAX_LABELS};
use vigil_proto::v1::{
    AlertEvent, Label, LogBatch, LogLine, LogSource, MetricBatch, PartialAggregate,
    PartialAggregateBatch, Resource, Sample, sample,
};
use vigil_runtime::bus::{REASON_HEADER, SCHEMA_HEADER};

use crate::{ChildProcess, TestServers, unique_name, wait_until};

/// Nanoseconds in a second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Three years: a time this far ahead of the clock is still before 2200, so only
/// a stage's clock-skew guard can refuse it.
const THREE_YEARS_NANOS: i64 = 3 * 365 * 86_400 * NANOS_PER_SECOND;

/// The labels of the "million labels" cases. Each label is five bytes on the
/// wire, so the batch is about 5 MB: the broker of these tests takes it, so the
/// stage sees it whole.
pub const MILLION: usize = 1_000_000;

/// The largest message the test producer sends: above the million-label batches.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long reading a topic to its end may take.
const READ_DEADLINE: Duration = Duration::from_secs(30);

/// The current time in nanoseconds since the Unix epoch.
pub fn now_unix_nano() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_nanos()).expect("nanoseconds since 1970 fit in i64")
}

/// One message to publish: its Kafka key (which the dead-letter topic keeps),
/// its payload and its schema name.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: String,
    pub payload: Vec<u8>,
    pub kind: &'static str,
}

impl Published {
    /// `batch`, encoded, under `key`.
    pub fn of<P: Payload>(key: impl Into<String>, batch: &P) -> Published {
        Published {
            key: key.into(),
            payload: batch.to_payload(),
            kind: P::KIND,
        }
    }
}

/// A hostile message and what the reason of its dead letter must contain.
#[derive(Debug, Clone)]
pub struct Hostile {
    pub message: Published,
    pub reason: String,
}

impl Hostile {
    fn new<P: Payload>(key: &str, batch: &P, reason: impl Into<String>) -> Hostile {
        Hostile {
            message: Published::of(key, batch),
            reason: reason.into(),
        }
    }
}

/// A resource with an id and host name.
pub fn resource(id: &str) -> Resource {
    Resource {
        id: id.into(),
        host_name: id.into(),
        ..Resource::default()
    }
}

/// A gauge sample at `time_unix_nano`.
pub fn gauge(name: &str, value: f64, time_unix_nano: i64) -> Sample {
    Sample {
        name: name.into(),
        time_unix_nano,
        value: Some(sample::Value::Gauge(value)),
        ..Sample::default()
    }
}

/// A metric batch of `resource_id` holding `samples`.
pub fn metric_batch(resource_id: &str, samples: Vec<Sample>) -> MetricBatch {
    MetricBatch {
        resource: Some(resource(resource_id)),
        samples,
        producer: "vigil-e2e-hostile".into(),
    }
}

/// `count` labels named `l` with empty values: the smallest label on the wire.
fn labels(count: usize) -> Vec<Label> {
    vec![label("l", ""); count]
}

/// The reason prefix of a refused batch of type `P`.
fn invalid<P: Payload>(reason: &str) -> String {
    format!("invalid {}: {reason}", P::KIND)
}

/// Metric batches every stage refuses whatever its clock, each a valid batch of
/// one gauge at `now` with one hostile change; keys start with `prefix`.
pub fn refused_metric_batches(prefix: &str, now: i64) -> Vec<Hostile> {
    let valid = || {
        metric_batch(
            &format!("{prefix}-host"),
            vec![gauge("e2e.gauge", 1.0, now)],
        )
    };
    let with_sample = |key: &str, change: &dyn Fn(&mut Sample), reason: &str| {
        let mut batch = valid();
        change(&mut batch.samples[0]);
        Hostile::new(
            &format!("{prefix}/{key}"),
            &batch,
            invalid::<MetricBatch>(reason),
        )
    };
    let with_resource = |key: &str, change: &dyn Fn(&mut Resource), reason: &str| {
        let mut batch = valid();
        change(batch.resource.as_mut().expect("a resource"));
        Hostile::new(
            &format!("{prefix}/{key}"),
            &batch,
            invalid::<MetricBatch>(reason),
        )
    };
    let after_2200 = LATEST_UNIX_NANO + THREE_YEARS_NANOS;
    vec![
        with_sample(
            "time-i64-max",
            &|s| s.time_unix_nano = i64::MAX,
            "sample 0 (`e2e.gauge`) has `time_unix_nano` 9223372036854775807, after 2200-01-01",
        ),
        with_sample(
            "time-i64-min",
            &|s| s.time_unix_nano = i64::MIN,
            "sample 0 (`e2e.gauge`) has `time_unix_nano` -9223372036854775808, before 1970",
        ),
        with_sample(
            "time-years-after-2200",
            &|s| s.time_unix_nano = after_2200,
            &format!("sample 0 (`e2e.gauge`) has `time_unix_nano` {after_2200}, after 2200-01-01"),
        ),
        with_sample(
            "time-years-before-1970",
            &|s| s.time_unix_nano = -THREE_YEARS_NANOS,
            &format!(
                "sample 0 (`e2e.gauge`) has `time_unix_nano` {}, before 1970",
                -THREE_YEARS_NANOS
            ),
        ),
        with_sample(
            "time-unset",
            &|s| s.time_unix_nano = 0,
            "sample 0 (`e2e.gauge`) has no `time_unix_nano` (it is 0)",
        ),
        with_sample(
            "empty-sample-name",
            &|s| s.name.clear(),
            "sample 0 has no name",
        ),
        with_sample(
            "empty-label-name",
            &|s| s.labels = vec![label("ok", "1"), label("", "x")],
            "sample 0 (`e2e.gauge`) has an unnamed label at position 1",
        ),
        with_sample(
            "no-value",
            &|s| s.value = None,
            "sample 0 (`e2e.gauge`) has no value",
        ),
        with_sample(
            "million-labels",
            &|s| s.labels = labels(MILLION),
            &format!(
                "sample 0 (`e2e.gauge`) has {MILLION} labels, more than the {MAX_LABELS} allowed"
            ),
        ),
        with_resource("empty-resource-id", &|r| r.id.clear(), "empty resource id"),
        with_resource(
            "empty-attribute-name",
            &|r| r.attributes = vec![label("", "ams")],
            &format!("resource `{prefix}-host` has an unnamed attribute at position 0"),
        ),
        with_resource(
            "attributes-over-limit",
            &|r| r.attributes = labels(MAX_LABELS + 1),
            &format!(
                "resource `{prefix}-host` has {} attributes, more than the {MAX_LABELS} allowed",
                MAX_LABELS + 1
            ),
        ),
        Hostile::new(
            &format!("{prefix}/no-samples"),
            &metric_batch(&format!("{prefix}-host"), Vec::new()),
            invalid::<MetricBatch>("no samples"),
        ),
    ]
}

/// A metric batch that decodes, stamped years ahead of `now`: refused by the
/// stages whose clocks follow event time.
pub fn metric_batch_years_ahead(prefix: &str, now: i64) -> Hostile {
    let batch = metric_batch(
        &format!("{prefix}-host"),
        vec![gauge("e2e.gauge", 1.0, now + THREE_YEARS_NANOS)],
    );
    Hostile::new(
        &format!("{prefix}/time-years-ahead"),
        &batch,
        "ahead of this host's clock (at most 5m allowed)",
    )
}

/// A log batch of one line of `text` at offset 0, at `time`.
pub fn log_batch(resource_id: &str, dataset: &str, text: &str, time: i64) -> LogBatch {
    LogBatch {
        resource: Some(resource(resource_id)),
        source: Some(LogSource {
            path: format!("/var/log/{dataset}.log"),
            source_id: format!("{resource_id}:{dataset}"),
            dataset: dataset.into(),
            ..LogSource::default()
        }),
        lines: vec![LogLine {
            offset: 0,
            length: text.len() as u64 + 1,
            message: text.as_bytes().to_vec(),
            event_time_unix_nano: time,
            observed_time_unix_nano: time,
            ..LogLine::default()
        }],
    }
}

/// Log batches every stage refuses whatever its clock, each a valid one-line
/// batch of `dataset` at `now` with one hostile change; keys start with `prefix`.
pub fn refused_log_batches(prefix: &str, dataset: &str, now: i64) -> Vec<Hostile> {
    let valid = || log_batch(&format!("{prefix}-host"), dataset, "hostile line", now);
    let with = |key: &str, change: &dyn Fn(&mut LogBatch), reason: &str| {
        let mut batch = valid();
        change(&mut batch);
        Hostile::new(
            &format!("{prefix}/{key}"),
            &batch,
            invalid::<LogBatch>(reason),
        )
    };
    let line = |batch: &mut LogBatch| -> LogLine { batch.lines[0].clone() };
    vec![
        with(
            "event-time-i64-max",
            &|b| b.lines[0].event_time_unix_nano = i64::MAX,
            "line 0 (at offset 0) has `event_time_unix_nano` 9223372036854775807, after 2200-01-01",
        ),
        with(
            "observed-time-i64-min",
            &|b| b.lines[0].observed_time_unix_nano = i64::MIN,
            "line 0 (at offset 0) has `observed_time_unix_nano` -9223372036854775808, before 1970",
        ),
        with(
            "event-time-years-before-1970",
            &|b| b.lines[0].event_time_unix_nano = -THREE_YEARS_NANOS,
            &format!(
                "line 0 (at offset 0) has `event_time_unix_nano` {}, before 1970",
                -THREE_YEARS_NANOS
            ),
        ),
        with(
            "offset-u64-max",
            &|b| b.lines[0].offset = u64::MAX - 3,
            &format!(
                "line 0 (at offset {}) has `length` 13, which ends past the largest offset a file can have",
                u64::MAX - 3
            ),
        ),
        with(
            "overlapping-lines",
            &|b| {
                let mut second = line(b);
                second.offset = 1;
                b.lines.push(second);
            },
            "line at offset 1 overlaps the line at offset 0",
        ),
        with("no-lines", &|b| b.lines.clear(), "no lines"),
        with(
            "empty-source-id",
            &|b| b.source.as_mut().expect("a source").source_id.clear(),
            "empty source id",
        ),
        with(
            "empty-resource-id",
            &|b| b.resource.as_mut().expect("a resource").id.clear(),
            "empty resource id",
        ),
        with(
            "empty-attribute-name",
            &|b| b.resource.as_mut().expect("a resource").attributes = vec![label("", "x")],
            &format!("resource `{prefix}-host` has an unnamed attribute at position 0"),
        ),
        with(
            "million-attributes",
            &|b| b.resource.as_mut().expect("a resource").attributes = labels(MILLION),
            &format!(
                "resource `{prefix}-host` has {MILLION} attributes, more than the {MAX_LABELS} allowed"
            ),
        ),
    ]
}

/// A log batch that decodes, its line stamped years ahead of `now`: refused by
/// the stages whose clocks follow event time.
pub fn log_batch_years_ahead(prefix: &str, dataset: &str, now: i64) -> Hostile {
    let batch = log_batch(
        &format!("{prefix}-host"),
        dataset,
        "hostile line",
        now + THREE_YEARS_NANOS,
    );
    Hostile::new(
        &format!("{prefix}/event-time-years-ahead"),
        &batch,
        "ahead of this host's clock (at most 5m allowed)",
    )
}

/// A valid partial aggregate of `definition` over `[end - 60 s, end)` in the
/// group `site=<site>`, counting one value.
pub fn partial(definition: &str, site: &str, end: i64, value: f64) -> PartialAggregate {
    PartialAggregate {
        definition: definition.into(),
        group: vec![label("site", site)],
        window_start_unix_nano: end - 60 * NANOS_PER_SECOND,
        window_end_unix_nano: end,
        count: 1,
        sum: value,
        min: value,
        max: value,
        ..PartialAggregate::default()
    }
}

/// A batch of `partials` under `group_key`.
pub fn partial_batch(group_key: &str, partials: Vec<PartialAggregate>) -> PartialAggregateBatch {
    PartialAggregateBatch {
        group_key: group_key.into(),
        partials,
        producer: "vigil-e2e-hostile".into(),
    }
}

/// Partial aggregate batches the derive stage refuses, each a valid partial of
/// `definition` ending at `end` with one hostile change; keys start with `prefix`.
pub fn refused_partial_batches(prefix: &str, definition: &str, end: i64) -> Vec<Hostile> {
    let with = |key: &str, change: &dyn Fn(&mut PartialAggregate), reason: &str| {
        let mut hostile = partial(definition, "hostile", end, 3.0);
        change(&mut hostile);
        let batch = partial_batch(&format!("{definition}|site=hostile"), vec![hostile]);
        let subject = if reason.starts_with("partial 0 ") {
            String::new()
        } else {
            format!("partial 0 (`{definition}`) ")
        };
        Hostile::new(
            &format!("{prefix}/{key}"),
            &batch,
            invalid::<PartialAggregateBatch>(&format!("{subject}{reason}")),
        )
    };
    let after_2200 = LATEST_UNIX_NANO + THREE_YEARS_NANOS;
    let mut cases = vec![
        with(
            "min-above-max",
            &|p| {
                p.count = 2;
                p.min = 5.0;
                p.max = 1.0;
            },
            "has `min` 5 above `max` 1 (with `count` 2)",
        ),
        with(
            "sum-nan",
            &|p| p.sum = f64::NAN,
            "has a non-finite `sum` (NaN)",
        ),
        with(
            "max-infinite",
            &|p| p.max = f64::INFINITY,
            "has a non-finite `max` (inf)",
        ),
        with(
            "min-negative-infinite",
            &|p| p.min = f64::NEG_INFINITY,
            "has a non-finite `min` (-inf)",
        ),
        with(
            "window-end-i64-max",
            &|p| p.window_end_unix_nano = i64::MAX,
            "has `window_end_unix_nano` 9223372036854775807, after 2200-01-01",
        ),
        with(
            "window-start-i64-min",
            &|p| p.window_start_unix_nano = i64::MIN,
            "has `window_start_unix_nano` -9223372036854775808, before 1970",
        ),
        with(
            "window-end-years-after-2200",
            &|p| p.window_end_unix_nano = after_2200,
            &format!("has `window_end_unix_nano` {after_2200}, after 2200-01-01"),
        ),
        with(
            "window-backwards",
            &|p| p.window_end_unix_nano = p.window_start_unix_nano - NANOS_PER_SECOND,
            "has a window that ends before it starts",
        ),
        with(
            "sketch-without-counts",
            &|p| p.positive_bucket_index = vec![1, 2],
            "has sketch buckets without counts",
        ),
        with(
            "empty-group-label-name",
            &|p| p.group = vec![label("", "ams")],
            "has an unnamed group label at position 0",
        ),
        with(
            "million-group-labels",
            &|p| p.group = labels(MILLION),
            &format!("has {MILLION} group labels, more than the {MAX_LABELS} allowed"),
        ),
        with(
            "empty-definition",
            &|p| p.definition.clear(),
            "partial 0 names no definition",
        ),
    ];
    cases.push(Hostile::new(
        &format!("{prefix}/empty-group-key"),
        &partial_batch("", vec![partial(definition, "hostile", end, 3.0)]),
        invalid::<PartialAggregateBatch>("empty group key"),
    ));
    cases.push(Hostile::new(
        &format!("{prefix}/no-partials"),
        &partial_batch(&format!("{definition}|site=hostile"), Vec::new()),
        invalid::<PartialAggregateBatch>("no partial aggregates"),
    ));
    cases
}

/// A firing alert event of `alert` for `host`, evaluated at `now`.
pub fn alert_event(alert: &str, host: &str, now: i64) -> AlertEvent {
    AlertEvent {
        alert: alert.into(),
        labels: vec![label("alertname", alert), label("host", host)],
        annotations: vec![label("summary", "e2e")],
        starts_at_unix_nano: now,
        value: 1.0,
        fingerprint: format!("{alert}-{host}"),
        evaluated_at_unix_nano: now,
        ..AlertEvent::default()
    }
}

/// Alert events the index stage refuses, each a valid event at `now` with one
/// hostile change; keys start with `prefix`.
pub fn refused_alert_events(prefix: &str, now: i64) -> Vec<Hostile> {
    let with = |key: &str, change: &dyn Fn(&mut AlertEvent), reason: &str| {
        let mut event = alert_event("HostileAlert", key, now);
        change(&mut event);
        Hostile::new(
            &format!("{prefix}/{key}"),
            &event,
            invalid::<AlertEvent>(reason),
        )
    };
    vec![
        with("empty-alert-name", &|e| e.alert.clear(), "empty alert name"),
        with(
            "empty-fingerprint",
            &|e| e.fingerprint.clear(),
            "empty fingerprint",
        ),
        with(
            "starts-at-i64-max",
            &|e| e.starts_at_unix_nano = i64::MAX,
            "alert `HostileAlert` has `starts_at_unix_nano` 9223372036854775807, after 2200-01-01",
        ),
        with(
            "evaluated-at-i64-min",
            &|e| e.evaluated_at_unix_nano = i64::MIN,
            "alert `HostileAlert` has `evaluated_at_unix_nano` -9223372036854775808, before 1970",
        ),
        with(
            "empty-label-name",
            &|e| e.labels.push(label("", "x")),
            "alert `HostileAlert` has an unnamed label at position 2",
        ),
        with(
            "million-labels",
            &|e| e.labels = labels(MILLION),
            &format!(
                "alert `HostileAlert` has {MILLION} labels, more than the {MAX_LABELS} allowed"
            ),
        ),
        with(
            "annotations-over-limit",
            &|e| e.annotations = labels(MAX_LABELS + 1),
            &format!(
                "alert `HostileAlert` has {} annotations, more than the {MAX_LABELS} allowed",
                MAX_LABELS + 1
            ),
        ),
    ]
}

/// Records the outcome of every delivery, so a message the broker refused fails
/// the test instead of vanishing.
#[derive(Debug, Default)]
struct DeliveryErrors(Mutex<Vec<String>>);

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, message)) = result {
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{key}: {error}"));
        }
    }
}

/// Publishes messages one at a time to partition 0 of a topic, so that a stage
/// takes them in the order sent, and fails on any the broker refuses.
pub struct OrderedProducer {
    producer: BaseProducer<DeliveryErrors>,
}

impl std::fmt::Debug for OrderedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedProducer").finish_non_exhaustive()
    }
}

impl Default for OrderedProducer {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderedProducer {
    /// A producer on the shared broker that sends messages up to
    /// [`MAX_MESSAGE_BYTES`].
    pub fn new() -> OrderedProducer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create_with_context(DeliveryErrors::default())
            .expect("create a producer");
        OrderedProducer { producer }
    }

    /// Sends `message` to partition 0 of `topic` and waits until the broker
    /// acknowledged it.
    pub fn send(&self, topic: &str, message: &Published) {
        let headers = OwnedHeaders::new().insert(Header {
            key: SCHEMA_HEADER,
            value: Some(message.kind),
        });
        self.producer
            .send(
                BaseRecord::to(topic)
                    .partition(0)
                    .key(&message.key)
                    .payload(&message.payload)
                    .headers(headers),
            )
            .map_err(|(error, _)| error)
            .unwrap_or_else(|error| panic!("enqueue {} on {topic}: {error}", message.key));
        self.producer
            .flush(Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("deliver {} to {topic}: {error}", message.key));
        let errors = self.producer.context().0.lock().unwrap().clone();
        assert!(errors.is_empty(), "the broker refused: {errors:?}");
    }

    /// Sends every message of `messages` in order.
    pub fn send_all<'a>(&self, topic: &str, messages: impl IntoIterator<Item = &'a Published>) {
        for message in messages {
            self.send(topic, message);
        }
    }
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Every message on `topic` of the shared broker now, read from the start of
/// each partition to its end, outside any consumer group.
pub fn read_topic(topic: &str) -> Vec<Record> {
    read_topic_on(&TestServers::get().kafka_bootstrap(), topic)
}

/// Like [`read_topic`], on the broker at `bootstrap`.
pub fn read_topic_on(bootstrap: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("hostile-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a reader");
    // A broker that has just restarted may refuse the first requests.
    let metadata = wait_until(&format!("metadata of {topic}"), READ_DEADLINE, || {
        consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
    });
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &partition in &partitions {
        let (low, high) = wait_until(
            &format!("watermarks of {topic}/{partition}"),
            READ_DEADLINE,
            || {
                consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .ok()
            },
        );
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("add a partition");
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&assignment).expect("assign the partitions");
    let started = Instant::now();
    while !ends.is_empty() {
        assert!(
            started.elapsed() < READ_DEADLINE,
            "reading {topic} to its end took over {READ_DEADLINE:?}; left: {ends:?}"
        );
        let Some(received) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = received.unwrap_or_else(|error| panic!("reading {topic}: {error}"));
        if ends
            .get(&message.partition())
            .is_some_and(|&end| message.offset() + 1 >= end)
        {
            ends.remove(&message.partition());
        }
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        records.push(Record {
            key: text(message.key()),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    records
}

/// The dead letters on `topic`: the reason of each, by the key of the message.
pub fn dead_letter_reasons(topic: &str) -> BTreeMap<String, String> {
    read_topic(topic)
        .into_iter()
        .map(|record| {
            let reason = record
                .headers
                .get(REASON_HEADER)
                .cloned()
                .unwrap_or_else(|| panic!("dead letter {} without a reason", record.key));
            (record.key, reason)
        })
        .collect()
}

/// Asserts that every one of `hostile` is among `dead_letters` (reasons by key)
/// with a reason that contains what its case expects.
pub fn assert_dead_lettered(dead_letters: &BTreeMap<String, String>, hostile: &[Hostile]) {
    let wrong: Vec<String> = hostile
        .iter()
        .filter_map(|case| match dead_letters.get(&case.message.key) {
            None => Some(format!("{}: not dead-lettered", case.message.key)),
            Some(reason) if !reason.contains(&case.reason) => Some(format!(
                "{}: reason `{reason}` does not say `{}`",
                case.message.key, case.reason
            )),
            Some(_) => None,
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Asserts that `process` still runs and never logged a panic.
pub fn assert_running_without_panic(process: &mut ChildProcess) {
    if let Some(status) = process.exit_status() {
        panic!(
            "{} exited with {status}:\n{}",
            process.name(),
            process.log_tail()
        );
    }
    let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "{} panicked:\n{}",
        process.name(),
        process.log_tail()
    );
}

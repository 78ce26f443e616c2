//! The `derive` stage: raw samples from the metrics topic become derived metrics
//! (counter rates, KPIs, windowed and cross-host aggregates) on the derived-metrics
//! topic, in the same batch format, so the index and the alert stage treat raw and
//! derived samples alike.
//!
//! ```text
//! metrics.raw ─► Engine::derive ─► metrics.derived            (rates, ratios, shares)
//!                     └─ windows ─► metrics.derived            (per-series aggregates)
//!                               └─► metrics.partial ─► Engine::merge_partials ─► metrics.derived
//!                                   (keyed by group)          (group-by aggregates)
//! ```
//!
//! Instances share the partitions of both input topics through one consumer
//! group. Each commits, per partition, the position a new owner must replay from
//! to rebuild its state (see [`engine`]), so a rebalance or a crash costs a short
//! replay, never a bogus rate or a gap. Definitions come from a watched source
//! like rules; a new set that fails to load is reported and the last good one
//! stays in force.
//!
//! The stage runs in the loop every stage shares (`crate::stage`), with its
//! clock-skew guard on: the watermark follows event time and never goes back,
//! so a raw batch stamped more than five minutes ahead of this host's clock is
//! dead-lettered instead of making every later sample late.

mod config;
pub mod counter;
pub mod definitions;
pub mod engine;
pub mod rates;
pub mod sketch;
pub mod window;

pub use config::DeriveSection;
pub(crate) use vigil_proto::series_identity::{HashedMap, SeriesId};

use crate::rule_source::{RuleFiles, RuleFilesWatch};
use crate::stage::{
    self, CommitPoint, DeadLetterKey, FirstSet, Intake, Rejection, Reload, Stage, StageError,
    WatchedSet,
};
use definitions::DefinitionSet;
use engine::{Closed, Engine, EngineCounts, EngineSettings};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rates::RateSettings;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use vigil_config::duration::unix_nanos;
use vigil_proto::v1::{MetricBatch, PartialAggregateBatch};
use vigil_proto::view::{DerivedBatchWriter, MetricBatchView};
use vigil_proto::{Payload, Topics};
use vigil_rules::RuleError;
use vigil_runtime::{Bus, BusError, Message, Publisher, SelfMetrics, Subscription};

/// Settings of the derive stage.
#[derive(Debug, Clone)]
pub struct DeriveStageConfig {
    /// Consumer group; instances of one group share the partitions.
    pub group: String,
    /// How often windows are closed and positions committed.
    pub tick: Duration,
    /// How late a sample may be and still count in its window.
    pub allowed_lateness: Duration,
    /// How long a group window waits for the partials of other instances.
    pub group_wait: Duration,
    /// Gaps longer than this many intervals restart a counter series.
    pub max_gap_intervals: u32,
    /// Interval assumed for a series before it has shown its own.
    pub default_interval: Duration,
    /// Most counter series, and most per-series window series, held.
    pub max_series: usize,
}

impl Default for DeriveStageConfig {
    fn default() -> Self {
        Self {
            group: "vigil-derive".to_owned(),
            tick: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(30),
            group_wait: Duration::from_secs(10),
            max_gap_intervals: 3,
            default_interval: Duration::from_secs(60),
            max_series: 1_000_000,
        }
    }
}

impl DeriveStageConfig {
    fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            rates: RateSettings {
                max_gap_intervals: self.max_gap_intervals,
                default_interval: self.default_interval,
            },
            allowed_lateness: self.allowed_lateness,
            group_wait: self.group_wait,
            producer: format!("vigil-derive/{}", env!("CARGO_PKG_VERSION")),
            max_series: self.max_series,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    metric: String,
}

/// How often at most the refusal of new series is logged.
const SERIES_REFUSED_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct DeriveMetrics {
    published: Family<TopicLabels, Counter>,
    counter_steps: Family<OutcomeLabels, Counter>,
    series: Gauge,
    open_windows: Gauge,
    series_refused: Family<MetricLabels, Counter>,
    /// When the refusal of new series was last logged.
    refusal_logged: Option<std::time::Instant>,
    reported: EngineCounts,
}

impl DeriveMetrics {
    fn register(metrics: &SelfMetrics) -> Self {
        Self {
            published: metrics.register(
                "derive_batches_published",
                "Batches published, by topic",
                Family::default(),
            ),
            counter_steps: metrics.register(
                "derive_counter_readings",
                "Counter readings by outcome: rate, started, reset, gap, reboot, duplicate, out_of_order; and late samples or partials, unknown partials",
                Family::default(),
            ),
            series: metrics.register(
                "derive_counter_series",
                "Counter series whose previous reading is held",
                Gauge::default(),
            ),
            open_windows: metrics.register(
                "derive_open_windows",
                "Windows open: per series, per group and partition, and groups being finished",
                Gauge::default(),
            ),
            series_refused: metrics.register(
                "derive_series_refused",
                "Samples of new series refused because derive.max_series series were held, by metric",
                Family::default(),
            ),
            refusal_logged: None,
            reported: EngineCounts::default(),
        }
    }

    /// Adds what the engine counted since the last report.
    fn report(&mut self, engine: &mut Engine) {
        self.report_refused_series(engine.take_refused_series());
        let now = engine.counts();
        let before = self.reported;
        let pairs = [
            ("rate", now.rates - before.rates),
            ("started", now.started - before.started),
            ("reset", now.resets - before.resets),
            ("gap", now.gaps - before.gaps),
            ("reboot", now.reboots - before.reboots),
            ("duplicate", now.duplicates - before.duplicates),
            ("out_of_order", now.out_of_order - before.out_of_order),
            ("late", now.late - before.late),
            (
                "unknown_partial",
                now.unknown_partials - before.unknown_partials,
            ),
        ];
        for (outcome, added) in pairs {
            if added > 0 {
                self.counter_steps
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc_by(added);
            }
        }
        self.reported = now;
        self.series.set(engine.series() as i64);
        self.open_windows.set(engine.open_windows() as i64);
    }

    /// Counts the samples of new series refused, and says so in the log at most
    /// every `SERIES_REFUSED_LOG_EVERY`, naming the metrics.
    fn report_refused_series(&mut self, refused: BTreeMap<String, u64>) {
        if refused.is_empty() {
            return;
        }
        for (metric, count) in &refused {
            self.series_refused
                .get_or_create(&MetricLabels {
                    metric: metric.clone(),
                })
                .inc_by(*count);
        }
        let now = std::time::Instant::now();
        if self
            .refusal_logged
            .is_none_or(|logged| now.duration_since(logged) >= SERIES_REFUSED_LOG_EVERY)
        {
            self.refusal_logged = Some(now);
            let metrics: Vec<&str> = refused.keys().map(String::as_str).collect();
            tracing::warn!(
                metrics = %metrics.join(", "),
                samples = refused.values().sum::<u64>(),
                "derive.max_series series are held: samples of new series are refused"
            );
        }
    }
}

/// The running derive stage.
#[derive(Debug)]
pub struct DeriveStage {
    intake: Intake,
    definitions: WatchedSet,
    derivation: Derivation,
}

impl DeriveStage {
    /// Subscribes to the raw metrics and the repartition topic of `bus`.
    pub fn new(
        bus: &Bus,
        definitions: RuleFilesWatch,
        config: DeriveStageConfig,
        metrics: &SelfMetrics,
    ) -> Result<Self, StageError> {
        let topics = bus.topics();
        let loopback_partials = matches!(bus, Bus::Memory(_));
        let mut inputs = vec![topics.metrics_raw()];
        if !loopback_partials {
            inputs.push(topics.metrics_partial());
        }
        let intake = Intake::new::<Derivation>(bus, &config.group, &inputs, metrics).map_err(
            |source: BusError| StageError::Bus {
                stage: Derivation::NAME,
                source,
            },
        )?;
        let definitions =
            WatchedSet::new::<Derivation>(definitions, "definition", FirstSet::Optional, metrics);
        let engine = Engine::new(&DefinitionSet::built_in(), config.engine_settings());
        let derivation = Derivation {
            publisher: intake.publisher().clone(),
            topics,
            engine,
            config,
            metrics: DeriveMetrics::register(metrics),
            positions: BTreeMap::new(),
            writer: DerivedBatchWriter::default(),
            loopback_partials,
        };
        Ok(Self {
            intake,
            definitions,
            derivation,
        })
    }

    /// Derives until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StageError> {
        stage::run(self.derivation, self.intake, self.definitions, shutdown).await
    }
}

/// What the derive stage does with its messages: the engine, and where its
/// output goes.
#[derive(Debug)]
struct Derivation {
    publisher: Publisher,
    topics: Topics,
    engine: Engine,
    config: DeriveStageConfig,
    metrics: DeriveMetrics,
    /// Last offset processed per topic and partition.
    positions: BTreeMap<(String, i32), i64>,
    /// Where the engine writes each derived batch.
    writer: DerivedBatchWriter,
    /// On the in-process bus the one instance finishes every group itself, so
    /// partials go straight back into the engine instead of through a topic it
    /// would have to consume while publishing to it.
    loopback_partials: bool,
}

/// A decoded input of the derive stage; raw batches are read in place.
enum DeriveInput<'m> {
    Metrics(MetricBatchView<'m>),
    Partials(PartialAggregateBatch),
}

impl Stage for Derivation {
    const NAME: &'static str = "derive";
    const DEAD_LETTERS_BY: DeadLetterKey = DeadLetterKey::Topic;
    type Batch<'m> = DeriveInput<'m>;
    type Event = Infallible;

    fn decode<'m>(&self, message: &'m Message) -> Result<DeriveInput<'m>, Rejection> {
        if message.topic == self.topics.metrics_partial() {
            Ok(DeriveInput::Partials(PartialAggregateBatch::from_payload(
                &message.payload,
            )?))
        } else {
            Ok(DeriveInput::Metrics(MetricBatchView::decode(
                &message.payload,
            )?))
        }
    }

    /// Raw samples move the watermark, so they are held to this host's clock;
    /// partials come from other instances that already were.
    fn latest_event_time(batch: &DeriveInput<'_>) -> Option<i64> {
        match batch {
            DeriveInput::Metrics(batch) => batch.samples.iter().map(|s| s.time_unix_nano).max(),
            DeriveInput::Partials(_) => None,
        }
    }

    async fn process<'m>(&mut self, message: &'m Message, batch: DeriveInput<'m>) {
        match batch {
            DeriveInput::Partials(batch) => {
                self.engine
                    .merge_partials(&batch, message.partition, message.offset);
            }
            DeriveInput::Metrics(batch) => {
                let derived =
                    self.engine
                        .derive(&batch, message.partition, message.offset, &mut self.writer);
                if derived {
                    self.publish_encoded(batch.resource.id).await;
                }
            }
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(self.config.tick)
    }

    async fn tick(&mut self, _subscription: &Subscription, input_quiet: bool) {
        let mut watermark = self.engine.watermark();
        if input_quiet {
            // Quiet input: wall-clock time moves the windows on.
            let lateness = vigil_config::duration::nanos(self.config.allowed_lateness);
            watermark = watermark.max(unix_nanos(SystemTime::now()) - lateness);
        }
        let mut closed = self.engine.advance(watermark);
        if self.loopback_partials {
            for batch in std::mem::take(&mut closed.partials) {
                self.engine.merge_partials(&batch, 0, 0);
            }
        }
        self.publish_closed(closed).await;
        self.metrics.report(&mut self.engine);
    }

    async fn next_event(&mut self) -> Infallible {
        std::future::pending().await
    }

    async fn handle(&mut self, event: Infallible) -> Result<(), StageError> {
        match event {}
    }

    /// Notes every message's position, and stores the resume positions on each
    /// tick and at the end.
    fn commit(&mut self, subscription: &Subscription, point: CommitPoint<'_>) {
        match point {
            CommitPoint::Consumed { message, .. } => {
                self.positions
                    .insert((message.topic.clone(), message.partition), message.offset);
            }
            CommitPoint::Ticked | CommitPoint::Stopped => self.commit_positions(subscription),
            CommitPoint::EventHandled => {}
        }
    }
}

impl Reload for Derivation {
    async fn reload(&mut self, files: &RuleFiles) -> Result<usize, Vec<RuleError>> {
        let set = DefinitionSet::from_files(files)?;
        self.engine.replace_definitions(&set);
        Ok(set.len())
    }
}

impl Derivation {
    /// Publishes the derived batch the engine wrote, keyed by its resource.
    async fn publish_encoded(&self, resource_id: &str) {
        let topic = self.topics.metrics_derived();
        let sent = self
            .publisher
            .publish_encoded::<MetricBatch>(&topic, resource_id, &self.writer.bytes)
            .await;
        self.count_published(&topic, sent);
    }

    async fn publish<P: Payload>(&self, topic: &str, batch: &P) {
        let sent = self.publisher.publish_batch(topic, batch).await;
        self.count_published(topic, sent);
    }

    fn count_published(&self, topic: &str, sent: Result<(), BusError>) {
        match sent {
            Ok(()) => {
                self.metrics
                    .published
                    .get_or_create(&TopicLabels {
                        topic: topic.to_owned(),
                    })
                    .inc();
            }
            Err(error) => tracing::error!(%error, %topic, "derived batch could not be published"),
        }
    }

    async fn publish_closed(&self, closed: Closed) {
        let partial_topic = self.topics.metrics_partial();
        for batch in &closed.partials {
            self.publish(&partial_topic, batch).await;
        }
        let derived_topic = self.topics.metrics_derived();
        for batch in &closed.derived {
            self.publish(&derived_topic, batch).await;
        }
    }

    /// Stores, per partition, where a new owner must start: the earliest position
    /// the engine still needs, or past the last message processed.
    fn commit_positions(&self, subscription: &Subscription) {
        let partial_topic = self.topics.metrics_partial();
        for ((topic, partition), last) in &self.positions {
            let needed = if *topic == partial_topic {
                self.engine.resume_partial_offset(*partition)
            } else {
                self.engine.resume_offset(*partition)
            };
            let next = needed.map_or(last + 1, |needed| needed.min(last + 1));
            if let Err(error) = subscription.commit_position(topic, *partition, next) {
                tracing::debug!(%error, %topic, partition, "position not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests;

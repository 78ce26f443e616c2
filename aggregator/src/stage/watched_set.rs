//! The watched set of a stage in the stage loop: the alert stage's rules, the
//! derive stage's definitions. Each new version of the files from the rule
//! source is loaded into the stage; one that does not load is reported, counted,
//! and ignored, so the last good set stays in force.

use super::{Stage, StageError};
use crate::rule_source::{RuleFiles, RuleFilesWatch};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::convert::Infallible;
use tokio_util::sync::CancellationToken;
use vigil_rules::RuleError;
use vigil_runtime::SelfMetrics;

/// A stage whose rules or definitions come from a watched source.
pub(crate) trait Reload {
    /// Puts the set `files` describe in force and says how many rules or
    /// definitions it holds; on errors, the set in force stays.
    async fn reload(&mut self, files: &RuleFiles) -> Result<usize, Vec<RuleError>>;
}

/// What the loop waits for besides messages: a new version of the stage's set.
pub(crate) trait SetWatch<S> {
    /// A new version to load.
    type Update;

    /// Loads the set there is at start, waiting for one if the stage needs it.
    async fn load_first(&mut self, stage: &mut S, shutdown: &CancellationToken);

    /// Waits for a new version; an error when the source stopped. Cancel-safe.
    async fn next_update(&mut self) -> Result<Self::Update, StageError>;

    /// Loads `update` into `stage`.
    async fn apply(&mut self, stage: &mut S, update: Self::Update);
}

/// Whether a stage may run before its first set arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstSet {
    /// Nothing is evaluated before the first set (alert rules: an empty rule set
    /// would resolve every restored alert).
    Awaited,
    /// The stage runs meanwhile on what it has built in (derive: rates and KPIs).
    Optional,
}

/// Rule or definition files a stage loads as they change, with the outcome
/// counter and the size gauge.
#[derive(Debug)]
pub(crate) struct WatchedSet {
    files: RuleFilesWatch,
    /// What one entry of the set is called: `rule`, `definition`.
    item: &'static str,
    first: FirstSet,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
    loaded: Gauge,
}

impl WatchedSet {
    /// Watches `files` of stage `S`, whose entries are called `item`; the
    /// metrics are `<stage>_<item>_reloads` and `<stage>_<item>s_loaded`.
    pub(crate) fn new<S: Stage>(
        files: RuleFilesWatch,
        item: &'static str,
        first: FirstSet,
        metrics: &SelfMetrics,
    ) -> Self {
        let stage = S::NAME;
        Self {
            files,
            item,
            first,
            reloads: metrics.register(
                &format!("{stage}_{item}_reloads"),
                &format!(
                    "Reloads of the {item} set, by status (a failed reload keeps the last good set)"
                ),
                Family::default(),
            ),
            loaded: metrics.register(
                &format!("{stage}_{item}s_loaded"),
                &format!("Entries of the {item} set in force"),
                Gauge::default(),
            ),
        }
    }

    async fn reload<S: Reload>(&mut self, stage: &mut S) {
        let Some(files) = self.files.borrow_and_update().clone() else {
            return;
        };
        let item = self.item;
        match stage.reload(&files).await {
            Ok(count) => {
                self.loaded.set(count as i64);
                self.reloads.get_or_create(&[("status", "success")]).inc();
                tracing::info!(loaded = count, files = files.len(), "{item} set loaded");
            }
            Err(errors) => {
                self.reloads.get_or_create(&[("status", "failure")]).inc();
                for error in &errors {
                    tracing::error!(%error, "invalid {item}");
                }
                tracing::error!(
                    errors = errors.len(),
                    "new {item} set rejected; the last good {item} set stays in force"
                );
            }
        }
    }
}

impl<S: Reload> SetWatch<S> for WatchedSet {
    type Update = ();

    async fn load_first(&mut self, stage: &mut S, shutdown: &CancellationToken) {
        while self.first == FirstSet::Awaited && self.files.borrow().is_none() {
            tracing::info!("waiting for the first {} set", self.item);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = self.files.changed() => if changed.is_err() { return },
            }
        }
        self.reload(stage).await;
    }

    async fn next_update(&mut self) -> Result<(), StageError> {
        self.files
            .changed()
            .await
            .map_err(|_| StageError::SourceStopped { set: self.item })
    }

    async fn apply(&mut self, stage: &mut S, (): ()) {
        self.reload(stage).await;
    }
}

/// The set of a stage that watches none: no update ever comes.
#[derive(Debug)]
pub(crate) struct NoWatchedSet;

impl<S> SetWatch<S> for NoWatchedSet {
    type Update = Infallible;

    async fn load_first(&mut self, _stage: &mut S, _shutdown: &CancellationToken) {}

    async fn next_update(&mut self) -> Result<Infallible, StageError> {
        std::future::pending().await
    }

    async fn apply(&mut self, _stage: &mut S, update: Infallible) {
        match update {}
    }
}

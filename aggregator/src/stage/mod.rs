//! The one consume loop of the stream stages: derive, alert and index each take
//! messages from the bus through it, and differ only in what a [`Stage`] does
//! with them.
//!
//! ```text
//! bus ─► Intake ─► Stage::decode ─► clock-skew guard ─► Stage::process ─► Stage::commit
//!          │            └──────────────┴─► dead-letter topic of the stage
//!          ├─ tick ─► Stage::tick             (windows, clocks, assignment)
//!          ├─ events ─► Stage::handle         (writes finished, deliveries, state)
//!          └─ watched set ─► Reload::reload   (rules, definitions; the last good stays)
//! ```
//!
//! The loop owns what every stage does alike: it stops on shutdown, pauses after
//! a failed receive, dead-letters what does not decode (and, where the stage
//! asks for it, data stamped too far ahead), counts what it consumed and
//! dead-lettered, reloads the watched set keeping the last good one, waits
//! without fetching while the stage takes no more messages, and lets the stage
//! drain and commit before the subscription closes.

mod clock_skew;
mod intake;
mod watched_set;

pub(crate) use intake::{DeadLetterKey, Intake};
pub(crate) use watched_set::{FirstSet, NoWatchedSet, Reload, SetWatch, WatchedSet};

use crate::index::SinkError;
use std::time::Duration;
use thiserror::Error;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;
use vigil_proto::DecodeError;
use vigil_runtime::{BusError, Message, Subscription};

/// Why a stage stopped before it was told to, or could not start.
#[derive(Debug, Error)]
pub enum StageError {
    #[error("the {stage} stage could not connect to the bus")]
    Bus {
        stage: &'static str,
        #[source]
        source: BusError,
    },
    /// The watched source of rules or definitions ended.
    #[error("the {set} source stopped")]
    SourceStopped { set: &'static str },
    #[error("reading the alert state topic `{topic}`")]
    AlertStateUnreadable {
        topic: String,
        #[source]
        source: BusError,
    },
    /// The index sink refused a write in a way retrying cannot fix.
    #[error("writing {documents} documents to {sink}")]
    IndexWrite {
        documents: usize,
        sink: String,
        #[source]
        source: SinkError,
    },
}

/// Why a message goes to the dead-letter topic instead of being processed.
#[derive(Debug)]
pub(crate) struct Rejection {
    /// What kind of fault it is, the label of the index stage's dead-letter counter.
    pub(crate) kind: &'static str,
    /// What the dead letter's reason header tells a person.
    pub(crate) reason: String,
}

impl From<DecodeError> for Rejection {
    fn from(error: DecodeError) -> Self {
        Self {
            kind: match error {
                DecodeError::Protobuf { .. } | DecodeError::Malformed { .. } => "not_protobuf",
                DecodeError::Invalid { .. } => "invalid_batch",
            },
            reason: error.to_string(),
        }
    }
}

/// When the loop offers a stage to store its consumed positions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CommitPoint<'a> {
    /// A message was processed, or dead-lettered.
    Consumed {
        message: &'a Message,
        dead_lettered: bool,
    },
    /// The periodic work is done.
    Ticked,
    /// An event of the stage was handled.
    EventHandled,
    /// The loop stopped and the stage drained.
    Stopped,
}

/// What one stream stage does with what the loop hands it.
pub(crate) trait Stage {
    /// Names the stage in metrics, logs and its dead-letter topic.
    const NAME: &'static str;
    /// How the stage's dead-letter counter is labelled.
    const DEAD_LETTERS_BY: DeadLetterKey;
    /// A decoded message, read in place where the stage can.
    type Batch<'m>;
    /// Something besides a message that the stage waits for: a write that
    /// finished, a notification delivered, a record of a state topic.
    type Event;

    /// Runs once before the watched set is loaded and the first message taken:
    /// reads back the state the stage resumes from.
    async fn start(&mut self, _shutdown: &CancellationToken) -> Result<(), StageError> {
        Ok(())
    }

    /// Decodes `message`, or says why it goes to the dead-letter topic.
    fn decode<'m>(&self, message: &'m Message) -> Result<Self::Batch<'m>, Rejection>;

    /// The latest event time in `batch`, for stages that refuse data stamped
    /// further ahead of this host's clock than [`clock_skew::MAX_CLOCK_SKEW`];
    /// `None` takes the batch whatever its time.
    fn latest_event_time(batch: &Self::Batch<'_>) -> Option<i64>;

    /// Processes a batch that decoded.
    async fn process<'m>(&mut self, message: &'m Message, batch: Self::Batch<'m>);

    /// How often [`Stage::tick`] runs; `None`: never.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// The periodic work; `input_quiet` says no message came for a whole period,
    /// so wall-clock time has to move event-time clocks on.
    async fn tick(&mut self, _subscription: &Subscription, _input_quiet: bool) {}

    /// The next event; never, for a stage without any. Must be cancel-safe.
    async fn next_event(&mut self) -> Self::Event;

    /// Handles an event; an error stops the stage.
    async fn handle(&mut self, event: Self::Event) -> Result<(), StageError>;

    /// Whether the stage takes another message now; when it does not, the loop
    /// waits for its next event while the consumer stays in its group.
    fn accepts_messages(&self) -> bool {
        true
    }

    /// Stores what may be committed at `point`.
    fn commit(&mut self, subscription: &Subscription, point: CommitPoint<'_>);

    /// Finishes the work in hand once no more messages come; `failed` says the
    /// loop stopped on an error rather than on shutdown.
    async fn drain(&mut self, _failed: bool) -> Result<(), StageError> {
        Ok(())
    }
}

/// Pause after a failed receive, so a broken connection does not spin.
const RECEIVE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A failed receive that came back sooner than this had been queued (the
/// client queues one per failed connection attempt during an outage): it is
/// counted and logged but not followed by a pause, so that the backlog of an
/// outage does not hold the stage up once the broker is back.
const QUEUED_ERROR_WITHIN: Duration = Duration::from_millis(5);

/// At most this many queued errors in a row go without a pause.
const MAX_QUEUED_ERRORS_WITHOUT_PAUSE: u32 = 10_000;

/// Runs `stage` on the messages of `intake` until `shutdown` or an error, then
/// drains it, commits and closes the subscription.
pub(crate) async fn run<S, W>(
    mut stage: S,
    mut intake: Intake,
    mut watched: W,
    shutdown: CancellationToken,
) -> Result<(), StageError>
where
    S: Stage,
    W: SetWatch<S>,
{
    let ended = match stage.start(&shutdown).await {
        Ok(()) => {
            watched.load_first(&mut stage, &shutdown).await;
            consume(&mut stage, &mut intake, &mut watched, &shutdown).await
        }
        Err(error) => Err(error),
    };
    let drained = stage.drain(ended.is_err()).await;
    stage.commit(intake.subscription(), CommitPoint::Stopped);
    intake.close();
    ended.and(drained)
}

async fn consume<S, W>(
    stage: &mut S,
    intake: &mut Intake,
    watched: &mut W,
    shutdown: &CancellationToken,
) -> Result<(), StageError>
where
    S: Stage,
    W: SetWatch<S>,
{
    let period = stage.tick_period();
    let mut ticks = period.map(tokio::time::interval);
    let mut last_message = Instant::now();
    let mut queued_errors_in_a_row = 0_u32;
    loop {
        let waiting_since = Instant::now();
        if !stage.accepts_messages() {
            let event = intake
                .while_busy(async {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => None,
                        event = stage.next_event() => Some(event),
                    }
                })
                .await;
            let Some(event) = event else {
                return Ok(());
            };
            stage.handle(event).await?;
            stage.commit(intake.subscription(), CommitPoint::EventHandled);
            continue;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            update = watched.next_update() => watched.apply(stage, update?).await,
            _ = next_tick(&mut ticks) => {
                let input_quiet = period.is_some_and(|period| last_message.elapsed() >= period);
                stage.tick(intake.subscription(), input_quiet).await;
                stage.commit(intake.subscription(), CommitPoint::Ticked);
            }
            event = stage.next_event() => {
                stage.handle(event).await?;
                stage.commit(intake.subscription(), CommitPoint::EventHandled);
            }
            received = intake.recv() => {
                last_message = Instant::now();
                match received {
                    Ok(message) => take(stage, intake, message).await,
                    Err(BusError::Closed) => {
                        tracing::info!(stage = S::NAME, "the in-process bus closed");
                        return Ok(());
                    }
                    Err(error) => {
                        intake.count_receive_error();
                        tracing::warn!(stage = S::NAME, %error, "consuming failed; retrying");
                        let queued = waiting_since.elapsed() < QUEUED_ERROR_WITHIN
                            && queued_errors_in_a_row < MAX_QUEUED_ERRORS_WITHOUT_PAUSE;
                        if queued {
                            queued_errors_in_a_row += 1;
                        } else {
                            queued_errors_in_a_row = 0;
                            tokio::time::sleep(RECEIVE_RETRY_PAUSE).await;
                        }
                    }
                }
            }
        }
    }
}

/// Decodes and processes one message, or dead-letters it, then offers the commit.
async fn take<S: Stage>(stage: &mut S, intake: &Intake, message: Message) {
    intake.count_consumed(&message);
    let checked = stage.decode(&message).and_then(|batch| {
        if let Some(latest) = S::latest_event_time(&batch) {
            clock_skew::refuse_if_ahead(latest)?;
        }
        Ok(batch)
    });
    let dead_lettered = match checked {
        Ok(batch) => {
            stage.process(&message, batch).await;
            false
        }
        Err(rejection) => {
            intake.dead_letter(&message, &rejection).await;
            true
        }
    };
    stage.commit(
        intake.subscription(),
        CommitPoint::Consumed {
            message: &message,
            dead_lettered,
        },
    );
}

/// The next tick; never, without a period.
async fn next_tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

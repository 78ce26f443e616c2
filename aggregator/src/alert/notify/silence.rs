//! Silences: an operator's "do not notify about these alerts until then", kept in
//! etcd under `<prefix>/silences/<id>` as JSON and watched by every alert
//! instance, whose notifier leaves out the alerts they match while active.
//!
//! Each key carries an etcd lease that ends a day after the silence does, so
//! expired silences stay listable for a while and then disappear on their own.

use super::matcher::{Matcher, all_match};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::Label;
use vigil_runtime::etcd::{EtcdError, EtcdSettings, Snapshot};

/// The key below the deployment prefix.
pub(crate) const SILENCES_KEY: &str = "silences";

/// How long an expired silence stays in etcd before its lease removes it.
const EXPIRED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a silence could not be stored, listed or expired.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("silence `{id}` could not be written as JSON: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no silence `{id}`")]
    NotFound { id: String },
    #[error("silence `{id}` already expired at {ended}")]
    AlreadyExpired { id: String, ended: String },
}

/// Why a silence is refused before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSilence {
    #[error(
        "a silence needs at least one matcher that does not match an empty label, \
         such as `alertname=HostDown`"
    )]
    MatchesEverything,
    #[error("the duration of a silence must be positive")]
    NoDuration,
    #[error("a silence needs an author")]
    NoAuthor,
    #[error("the duration of a silence is too long")]
    TooLong,
}

/// One silence, as stored in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    pub id: String,
    /// Alerts matching all of these are not notified while the silence is active.
    pub matchers: Vec<Matcher>,
    #[serde(with = "rfc3339")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// Why, for whoever wonders later.
    pub comment: String,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    /// Starts later.
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

impl Silence {
    /// A new silence with a fresh id; refuses one that would match every alert.
    pub fn new(
        matchers: Vec<Matcher>,
        starts_at: DateTime<Utc>,
        duration: Duration,
        created_by: String,
        comment: String,
    ) -> Result<Self, InvalidSilence> {
        if !matchers.iter().any(|matcher| !matcher.matches_value("")) {
            return Err(InvalidSilence::MatchesEverything);
        }
        if duration.is_zero() {
            return Err(InvalidSilence::NoDuration);
        }
        if created_by.trim().is_empty() {
            return Err(InvalidSilence::NoAuthor);
        }
        let ends_at = chrono::Duration::from_std(duration)
            .ok()
            .and_then(|length| starts_at.checked_add_signed(length))
            .ok_or(InvalidSilence::TooLong)?;
        Ok(Self {
            id: random_id(),
            matchers,
            starts_at,
            ends_at,
            created_by,
            comment,
        })
    }

    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether an alert with `labels` is silenced at `now`.
    pub fn mutes(&self, labels: &[Label], now: DateTime<Utc>) -> bool {
        self.state(now) == SilenceState::Active && all_match(&self.matchers, labels)
    }
}

/// 128 random bits in the hyphenated form of a UUID.
fn random_id() -> String {
    let high = RandomState::new().hash_one(std::time::SystemTime::now());
    let low = RandomState::new().hash_one(std::process::id());
    let hex = format!("{high:016x}{low:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|error| serde::de::Error::custom(format!("`{text}`: {error}")))
    }
}

/// The silences of an etcd snapshot; an entry that is not a silence is logged and
/// skipped, so one bad key never lifts the others.
pub fn parse_silences(snapshot: &Snapshot) -> Vec<Silence> {
    snapshot
        .iter()
        .filter_map(|(key, text)| match serde_json::from_str::<Silence>(text) {
            Ok(silence) => Some(silence),
            Err(error) => {
                tracing::warn!(%key, %error, "not a silence; ignored");
                None
            }
        })
        .collect()
}

/// The current silences, following their etcd prefix.
#[derive(Debug, Clone)]
pub struct SilenceWatch {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl SilenceWatch {
    /// Watches `<prefix>/silences/` until `shutdown`.
    pub fn etcd(settings: &EtcdSettings, shutdown: CancellationToken) -> Self {
        Self::from_snapshots(settings.watch_prefix(settings.key_prefix(SILENCES_KEY), shutdown))
    }

    /// Follows snapshots of the silences prefix (key → JSON) from any source.
    pub fn from_snapshots(snapshots: watch::Receiver<Option<Arc<Snapshot>>>) -> Self {
        Self { snapshots }
    }

    /// The silences as of now, marking them seen.
    pub(crate) fn current(&mut self) -> Vec<Silence> {
        self.snapshots
            .borrow_and_update()
            .as_deref()
            .map(parse_silences)
            .unwrap_or_default()
    }

    /// Waits for a change; an error once the source has stopped.
    pub(crate) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.snapshots.changed().await
    }
}

/// Adds, lists and expires the silences of one deployment in etcd.
#[derive(Debug, Clone)]
pub struct SilenceStore {
    settings: EtcdSettings,
}

impl SilenceStore {
    pub fn new(settings: EtcdSettings) -> Self {
        Self { settings }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.settings.key_prefix(SILENCES_KEY))
    }

    /// Stores `silence` with a lease that outlives its end by a day.
    pub async fn put(&self, silence: &Silence, now: DateTime<Utc>) -> Result<(), SilenceError> {
        let json = serde_json::to_string(silence).map_err(|source| SilenceError::Encode {
            id: silence.id.clone(),
            source,
        })?;
        let client = self.settings.connect().await?;
        let remaining = (silence.ends_at - now).to_std().unwrap_or_default();
        let ttl = (remaining + EXPIRED_RETENTION).as_secs() as i64;
        let lease = client.grant_lease(ttl).await?;
        client
            .put(&self.key(&silence.id), &json, Some(lease))
            .await?;
        Ok(())
    }

    /// Every stored silence, the latest start first.
    pub async fn list(&self) -> Result<Vec<Silence>, SilenceError> {
        let client = self.settings.connect().await?;
        let (snapshot, _) =
            EtcdSettings::read_prefix(&client, &self.settings.key_prefix(SILENCES_KEY)).await?;
        let mut silences = parse_silences(&snapshot);
        silences.sort_by(|a, b| b.starts_at.cmp(&a.starts_at).then(a.id.cmp(&b.id)));
        Ok(silences)
    }

    /// Ends silence `id` at `now`; it stays listed as expired until its lease ends.
    pub async fn expire(&self, id: &str, now: DateTime<Utc>) -> Result<Silence, SilenceError> {
        let mut silence = self
            .list()
            .await?
            .into_iter()
            .find(|silence| silence.id == id)
            .ok_or_else(|| SilenceError::NotFound { id: id.to_owned() })?;
        if silence.state(now) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired {
                id: id.to_owned(),
                ended: silence.ends_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
        }
        silence.ends_at = now;
        silence.starts_at = silence.starts_at.min(now);
        self.put(&silence, now).await?;
        Ok(silence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vigil_proto::labels::label;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn silence(matchers: &[&str]) -> Silence {
        Silence::new(
            matchers.iter().map(|m| m.parse().unwrap()).collect(),
            at("2025-03-01T10:00:00Z"),
            Duration::from_secs(2 * 3600),
            "alice".into(),
            "disk swap on web hosts".into(),
        )
        .unwrap()
    }

    #[test]
    fn the_stored_json_has_the_documented_fields_and_reads_back() {
        let mut stored = silence(&["alertname=HostDown", "host=~web.*"]);
        stored.id = "6f1c0b9e-0000-4000-8000-000000000001".into();
        let value = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "6f1c0b9e-0000-4000-8000-000000000001",
                "matchers": ["alertname=\"HostDown\"", "host=~\"web.*\""],
                "starts_at": "2025-03-01T10:00:00Z",
                "ends_at": "2025-03-01T12:00:00Z",
                "created_by": "alice",
                "comment": "disk swap on web hosts",
            })
        );
        let read: Silence = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), value);
    }

    #[test]
    fn a_silence_mutes_matching_alerts_only_while_active() {
        let silence = silence(&["alertname=HostDown", "host=~web.*"]);
        let web = [label("alertname", "HostDown"), label("host", "web-1")];
        let db = [label("alertname", "HostDown"), label("host", "db-1")];
        assert_eq!(
            silence.state(at("2025-03-01T09:59:59Z")),
            SilenceState::Pending
        );
        assert!(!silence.mutes(&web, at("2025-03-01T09:59:59Z")));
        assert!(silence.mutes(&web, at("2025-03-01T10:00:00Z")));
        assert!(!silence.mutes(&db, at("2025-03-01T11:00:00Z")));
        assert_eq!(
            silence.state(at("2025-03-01T12:00:00Z")),
            SilenceState::Expired
        );
        assert!(!silence.mutes(&web, at("2025-03-01T12:00:00Z")));
    }

    #[test]
    fn a_silence_that_would_match_everything_is_refused() {
        let error = Silence::new(
            vec!["host=~.*".parse().unwrap()],
            Utc::now(),
            Duration::from_secs(60),
            "alice".into(),
            String::new(),
        )
        .unwrap_err();
        assert_eq!(error, InvalidSilence::MatchesEverything);
        assert!(
            error
                .to_string()
                .starts_with("a silence needs at least one matcher that does not match")
        );
    }

    #[test]
    fn ids_are_fresh_uuid_shaped_strings() {
        let (a, b) = (silence(&["a=b"]).id, silence(&["a=b"]).id);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn a_bad_entry_is_skipped_and_the_others_kept() {
        let good = silence(&["alertname=HostDown"]);
        let snapshot = Snapshot::from([
            ("bad".to_owned(), "{not json".to_owned()),
            (good.id.clone(), serde_json::to_string(&good).unwrap()),
        ]);
        let parsed = parse_silences(&snapshot);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].id, good.id);
    }

    #[tokio::test]
    async fn a_store_without_etcd_says_which_request_failed() {
        // A port nothing listens on once the listener is gone.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = SilenceStore::new(EtcdSettings::new(
            format!("http://127.0.0.1:{port}"),
            "/vigil",
        ));
        let error = store.expire("6f1c0b9e", Utc::now()).await.unwrap_err();
        assert!(matches!(error, SilenceError::Etcd(_)), "{error:?}");
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }

    #[test]
    fn store_errors_name_the_silence() {
        let missing = SilenceError::NotFound {
            id: "6f1c0b9e".into(),
        };
        assert_eq!(missing.to_string(), "no silence `6f1c0b9e`");
        let expired = SilenceError::AlreadyExpired {
            id: "6f1c0b9e".into(),
            ended: "2025-03-01T12:00:00Z".into(),
        };
        assert_eq!(
            expired.to_string(),
            "silence `6f1c0b9e` already expired at 2025-03-01T12:00:00Z"
        );
    }
}

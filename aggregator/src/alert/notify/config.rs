//! The notification settings of the alert stage (`alert.receivers`, `alert.route`,
//! `alert.inhibit_rules`), in Alertmanager's vocabulary so an SRE can carry a
//! routing tree over: receivers by name, a tree of routes with matchers, grouping
//! and timers that children inherit, and inhibition rules.

use super::matcher::Matcher;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;
use vigil_runtime::SecretRef;
use vigil_runtime::secret::InlineOrSecret;

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One named destination of notifications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Receiver {
    /// POSTs the Alertmanager webhook format (version 4) to `url`.
    Webhook {
        /// Name that routes refer to, sent as `receiver` in the payload.
        name: String,
        /// Written inline, or from a file or the environment where it carries a
        /// token.
        url: InlineOrSecret,
        /// Whether resolved alerts are sent too.
        #[serde(default = "send_resolved")]
        send_resolved: bool,
    },
    /// Triggers and resolves PagerDuty incidents (Events API v2), one per group.
    Pagerduty {
        name: String,
        /// The integration key of the PagerDuty service, from a file or the environment.
        routing_key: SecretRef,
        /// Events API endpoint; changed for a proxy or a test server.
        #[serde(default = "pagerduty_url")]
        url: String,
        #[serde(default = "send_resolved")]
        send_resolved: bool,
    },
    /// Posts to a Slack incoming webhook.
    Slack {
        name: String,
        /// The incoming-webhook URL; it carries a token, so it comes from a file or
        /// the environment.
        url: SecretRef,
        /// Overrides the webhook's default channel, e.g. `#ops`.
        channel: Option<String>,
        #[serde(default = "send_resolved")]
        send_resolved: bool,
    },
    /// Prints one line per alert to standard output.
    Console {
        #[serde(default = "console_name")]
        name: String,
    },
}

fn send_resolved() -> bool {
    true
}

fn pagerduty_url() -> String {
    PAGERDUTY_EVENTS_URL.to_owned()
}

fn console_name() -> String {
    "console".to_owned()
}

impl Receiver {
    /// The console receiver of the all-in-one mode.
    pub fn console() -> Self {
        Self::Console {
            name: console_name(),
        }
    }

    /// The name routes refer to.
    pub fn name(&self) -> &str {
        match self {
            Self::Webhook { name, .. }
            | Self::Pagerduty { name, .. }
            | Self::Slack { name, .. }
            | Self::Console { name } => name,
        }
    }

    /// Whether alerts that stopped firing are notified.
    pub fn send_resolved(&self) -> bool {
        match self {
            Self::Webhook { send_resolved, .. }
            | Self::Pagerduty { send_resolved, .. }
            | Self::Slack { send_resolved, .. } => *send_resolved,
            Self::Console { .. } => true,
        }
    }
}

/// A node of the routing tree. Unset fields are inherited from the parent; the
/// root's defaults are Alertmanager's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Receiver of the alerts this route takes (required at the root).
    pub receiver: Option<String>,
    /// Conditions an alert must meet to take this route (ignored at the root).
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Labels whose values split alerts into groups; `...` groups by all labels.
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default, with = "optional_duration")]
    pub group_wait: Option<Duration>,
    /// How long a group waits before notifying about alerts added or resolved.
    #[serde(default, with = "optional_duration")]
    pub group_interval: Option<Duration>,
    /// How long before an unchanged firing group is notified again.
    #[serde(default, with = "optional_duration")]
    pub repeat_interval: Option<Duration>,
    /// Whether siblings after a matching route are tried too.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Alertmanager's `group_wait` default.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's `group_interval` default.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's `repeat_interval` default.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

mod optional_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        vigil_config::duration::deserialize(deserializer).map(Some)
    }
}

/// While an alert matching `source_matchers` fires, alerts matching
/// `target_matchers` with the same values of the `equal` labels are not notified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    #[serde(default)]
    pub source_matchers: Vec<Matcher>,
    #[serde(default)]
    pub target_matchers: Vec<Matcher>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// How a notification that failed is tried again: when the receiver named a
/// time (`Retry-After`), then; otherwise after an exponential backoff with
/// jitter. Tries go on until the receiver accepts, or the notification is no
/// longer needed (its alerts resolved, or the group changed and a newer one
/// replaces it); a refusal that would only repeat (a 4xx other than 408 and 429,
/// a body over the receiver's limit) is not tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest wait between two tries of the backoff.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured: a receiver asking for more is tried
    /// again after this, so that one bad header cannot hold pages for days.
    pub max_retry_after: Duration,
}

/// The least wait after a `Retry-After`: one of zero, or a date past, would
/// otherwise have the notifier try again as fast as the receiver answers.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failed tries in a row (one or more) when the
    /// receiver named no time: `first_backoff` doubled per further failure up to
    /// `max_backoff`, less a random part of up to half of it (`jitter` in
    /// `[0, 1)`), so that groups failing together do not all try again at once.
    pub(crate) fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let full = self
            .first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// The wait a receiver asked for, within `max_retry_after` and no less
    /// than [`MIN_RETRY_AFTER`].
    pub(crate) fn retry_after(&self, asked: Duration) -> Duration {
        asked.max(MIN_RETRY_AFTER).min(self.max_retry_after)
    }
}

/// Everything the notifier needs.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub receivers: Vec<Receiver>,
    /// The routing tree; without one, every alert goes to every receiver, grouped
    /// by `alertname` with the default timers.
    pub route: Option<Route>,
    pub inhibit_rules: Vec<InhibitRule>,
    /// Base URL of the UI that alerts link to (`externalURL` in webhooks).
    pub external_url: String,
    pub retry: RetryPolicy,
}

impl NotifyConfig {
    /// Every alert printed as soon as it fires or resolves (the all-in-one mode).
    pub fn console() -> Self {
        Self {
            receivers: vec![Receiver::console()],
            route: Some(Route {
                receiver: Some(console_name()),
                group_by: Some(vec![ALL_LABELS.to_owned()]),
                group_wait: Some(Duration::ZERO),
                group_interval: Some(Duration::from_secs(1)),
                ..Route::default()
            }),
            ..Self::default()
        }
    }

    /// Checks what serde cannot; errors name the field below `alert.`.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        for (position, receiver) in self.receivers.iter().enumerate() {
            let field = format!("`alert.receivers[{position}]");
            if receiver.name().is_empty() {
                return Err(format!("{field}.name` must not be empty"));
            }
            if !names.insert(receiver.name()) {
                return Err(format!(
                    "{field}.name` repeats the receiver name `{}`",
                    receiver.name()
                ));
            }
            let url = match receiver {
                Receiver::Webhook {
                    url: InlineOrSecret::Inline(url),
                    ..
                }
                | Receiver::Pagerduty { url, .. } => url,
                Receiver::Webhook { .. } | Receiver::Slack { .. } | Receiver::Console { .. } => {
                    continue;
                }
            };
            if reqwest::Url::parse(url).is_err() {
                return Err(format!("{field}.url` is not a URL: `{url}`"));
            }
        }
        if let Some(route) = &self.route {
            if route.receiver.is_none() {
                return Err("`alert.route.receiver` is required".to_owned());
            }
            validate_route(route, "alert.route", &names)?;
        }
        if !self.external_url.is_empty() && reqwest::Url::parse(&self.external_url).is_err() {
            return Err(format!(
                "`alert.external_url` is not a URL: `{}`",
                self.external_url
            ));
        }
        Ok(())
    }
}

/// `group_by: ['...']`: one group per distinct label set.
pub(crate) const ALL_LABELS: &str = "...";

fn validate_route(route: &Route, path: &str, receivers: &BTreeSet<&str>) -> Result<(), String> {
    if let Some(receiver) = &route.receiver
        && !receivers.contains(receiver.as_str())
    {
        return Err(format!("`{path}.receiver` names no receiver `{receiver}`"));
    }
    if let Some(group_by) = &route.group_by
        && group_by.len() > 1
        && group_by.iter().any(|label| label == ALL_LABELS)
    {
        return Err(format!(
            "`{path}.group_by`: `...` groups by all labels and cannot be combined with others"
        ));
    }
    if route.group_interval.is_some_and(|d| d.is_zero()) {
        return Err(format!("`{path}.group_interval` must be positive"));
    }
    if route.repeat_interval.is_some_and(|d| d.is_zero()) {
        return Err(format!("`{path}.repeat_interval` must be positive"));
    }
    for (position, child) in route.routes.iter().enumerate() {
        validate_route(child, &format!("{path}.routes[{position}]"), receivers)?;
    }
    Ok(())
}

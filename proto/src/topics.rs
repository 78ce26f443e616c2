//! Topic names: `<prefix>.<dataset>.<kind>`, dots only, with a configurable prefix.
//!
//! Every stage derives its topic names from here so that producers and consumers
//! can never disagree on a spelling.

use thiserror::Error;

/// The names of every topic of one Vigil deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// A topic prefix that would produce invalid or ambiguous topic names.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "topic prefix `{prefix}` is invalid: use lowercase letters, digits, `_` and `-`, separated by single dots"
)]
pub struct TopicError {
    prefix: String,
}

impl Topics {
    /// Topic names under `prefix` (for example `vigil`, or `prod.vigil`).
    pub fn new(prefix: &str) -> Result<Self, TopicError> {
        let valid_segment = |segment: &str| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if prefix.split('.').all(valid_segment) {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(TopicError {
                prefix: prefix.to_owned(),
            })
        }
    }

    fn name(&self, dataset: &str, kind: &str) -> String {
        format!("{}.{dataset}.{kind}", self.prefix)
    }

    /// Raw samples from agents.
    pub fn metrics_raw(&self) -> String {
        self.name("metrics", "raw")
    }

    /// Samples computed by the derive stage.
    pub fn metrics_derived(&self) -> String {
        self.name("metrics", "derived")
    }

    /// Partial window aggregates, keyed by group, on their way to the derive
    /// instance that finishes the group (the repartition topic).
    pub fn metrics_partial(&self) -> String {
        self.name("metrics", "partial")
    }

    /// Log lines from agents.
    pub fn logs_raw(&self) -> String {
        self.name("logs", "raw")
    }

    /// Alert state changes from the alert stage.
    pub fn alert_events(&self) -> String {
        self.name("alerts", "events")
    }

    /// Latest state per alert (a compacted topic).
    pub fn alert_state(&self) -> String {
        self.name("alerts", "state")
    }

    /// Messages a stage could not process, with the reason in a header.
    pub fn dead_letter(&self, stage: &str) -> String {
        self.name("dlq", stage)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: "vigil".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_dotted_convention() {
        let topics = Topics::default();
        assert_eq!(topics.metrics_raw(), "vigil.metrics.raw");
        assert_eq!(topics.metrics_derived(), "vigil.metrics.derived");
        assert_eq!(topics.logs_raw(), "vigil.logs.raw");
        assert_eq!(topics.alert_events(), "vigil.alerts.events");
        assert_eq!(topics.alert_state(), "vigil.alerts.state");
        assert_eq!(topics.dead_letter("index"), "vigil.dlq.index");
        assert_eq!(
            Topics::new("prod.vigil").unwrap().logs_raw(),
            "prod.vigil.logs.raw"
        );
    }

    #[test]
    fn prefixes_with_other_separators_are_rejected() {
        for bad in ["", "Vigil", "a..b", "a/b", ".vigil", "vigil."] {
            let error = Topics::new(bad).expect_err(bad);
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
    }
}

//! Inhibition: while a source alert fires (a whole site is down), the notifier
//! leaves out target alerts it explains (each host of that site is unreachable),
//! as Alertmanager's `inhibit_rules` do.

use super::config::InhibitRule;
use super::matcher::all_match;
use vigil_proto::labels::find;
use vigil_proto::v1::AlertEvent;

/// Whether a firing alert of `firing` inhibits `target` under one of `rules`. An
/// alert never inhibits itself; a label missing on both sides counts as equal.
pub(crate) fn is_inhibited<'a>(
    rules: &[InhibitRule],
    target: &AlertEvent,
    firing: impl Iterator<Item = &'a AlertEvent> + Clone,
) -> bool {
    rules.iter().any(|rule| {
        all_match(&rule.target_matchers, &target.labels)
            && firing.clone().any(|source| {
                source.fingerprint != target.fingerprint
                    && all_match(&rule.source_matchers, &source.labels)
                    && rule.equal.iter().all(|name| {
                        find(&source.labels, name).unwrap_or_default()
                            == find(&target.labels, name).unwrap_or_default()
                    })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn alert(fingerprint: &str, labels: &[(&str, &str)]) -> AlertEvent {
        AlertEvent {
            fingerprint: fingerprint.into(),
            labels: labels.iter().map(|(n, v)| label(*n, *v)).collect(),
            ..AlertEvent::default()
        }
    }

    fn rule() -> InhibitRule {
        vigil_config::parse_yaml(
            "rule.yaml",
            "source_matchers: [alertname=SiteDown]\ntarget_matchers: ['severity=~warning|page']\nequal: [site]\n",
        )
        .unwrap()
    }

    #[test]
    fn a_firing_source_inhibits_targets_with_equal_labels_only() {
        let site_down = alert("s", &[("alertname", "SiteDown"), ("site", "fra")]);
        let fra = alert(
            "a",
            &[
                ("alertname", "HostDown"),
                ("site", "fra"),
                ("severity", "page"),
            ],
        );
        let ams = alert(
            "b",
            &[
                ("alertname", "HostDown"),
                ("site", "ams"),
                ("severity", "page"),
            ],
        );
        let info = alert(
            "c",
            &[
                ("alertname", "HostDown"),
                ("site", "fra"),
                ("severity", "info"),
            ],
        );
        let rules = [rule()];
        assert!(is_inhibited(&rules, &fra, [&site_down].into_iter()));
        assert!(
            !is_inhibited(&rules, &ams, [&site_down].into_iter()),
            "other site"
        );
        assert!(
            !is_inhibited(&rules, &info, [&site_down].into_iter()),
            "not a target"
        );
        assert!(
            !is_inhibited(&rules, &fra, [&ams].into_iter()),
            "no source fires"
        );
    }

    #[test]
    fn an_alert_matching_both_sides_does_not_inhibit_itself() {
        let both = alert("x", &[("alertname", "SiteDown"), ("severity", "page")]);
        assert!(!is_inhibited(&[rule()], &both, [&both].into_iter()));
    }
}

//! Labels in the derive engine, as samples are matched, keyed and kept: hashes of
//! label sets, owned copies for window outputs, and the values definitions select
//! and group by.

use vigil_proto::labels::label;
use vigil_proto::series_identity;
use vigil_proto::v1::{Label, Resource};
use vigil_proto::view::{LabelView, ResourceView};
use vigil_rules::LabelMatcher;

/// A hash of `labels` (except the one named `except`), in their order.
pub(super) fn hash_labels(
    buffer: &mut Vec<u8>,
    labels: &[LabelView<'_>],
    except: Option<&str>,
) -> u64 {
    series_identity::hash_labels(
        buffer,
        labels
            .iter()
            .filter(|pair| except != Some(pair.name))
            .map(|pair| (pair.name, pair.value)),
    )
}

/// [`hash_labels`] of owned labels.
pub(super) fn hash_owned_labels(buffer: &mut Vec<u8>, labels: &[Label]) -> u64 {
    series_identity::hash_labels(
        buffer,
        labels
            .iter()
            .map(|pair| (pair.name.as_str(), pair.value.as_str())),
    )
}

pub(super) fn owned_labels(labels: &[LabelView<'_>]) -> Vec<Label> {
    labels
        .iter()
        .map(|pair| label(pair.name, pair.value))
        .collect()
}

pub(super) fn owned_resource(resource: &ResourceView<'_>) -> Resource {
    Resource {
        id: resource.id.to_owned(),
        kind: resource.kind,
        host_name: resource.host_name.to_owned(),
        attributes: owned_labels(&resource.attributes),
    }
}

/// Whether a sample's labels (or, for names it lacks, its resource) pass `matchers`.
pub(super) fn selected(
    matchers: &[LabelMatcher],
    labels: &[LabelView<'_>],
    resource: &ResourceView<'_>,
) -> bool {
    matchers
        .iter()
        .all(|matcher| matcher.matches(label_value(labels, resource, matcher.name())))
}

/// The value of label `name`: the sample's label, else the resource attribute,
/// else `host` as the resource's host name; empty when none has it.
pub(super) fn label_value<'a>(
    labels: &[LabelView<'a>],
    resource: &ResourceView<'a>,
    name: &str,
) -> &'a str {
    let find = |labels: &[LabelView<'a>]| {
        labels
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value)
    };
    find(labels)
        .or_else(|| find(&resource.attributes))
        .or_else(|| (name == "host").then_some(resource.host_name))
        .unwrap_or_default()
}

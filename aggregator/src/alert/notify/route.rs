//! The routing tree: which routes an alert event takes on its way to the
//! receivers, and which aggregation group of each route it joins.
//!
//! Matching is Alertmanager's: an alert walks down from the root into the first
//! child whose matchers hold (and on into later siblings when that child says
//! `continue`); the deepest routes reached are the ones it takes.

use super::config::{
    ALL_LABELS, DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, Receiver,
    Route,
};
use super::matcher::{Matcher, all_match};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_proto::v1::Label;

/// A route with everything inherited filled in.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedRoute {
    pub(crate) receiver: String,
    matchers: Vec<Matcher>,
    group_by: GroupBy,
    pub(crate) group_wait: Duration,
    pub(crate) group_interval: Duration,
    pub(crate) repeat_interval: Duration,
    continue_matching: bool,
    /// Positions of the children in the flattened tree.
    children: Vec<usize>,
    /// The matchers of the path from the root, `{}/{severity="page"}`, as
    /// Alertmanager writes it at the start of a group key.
    path: String,
}

#[derive(Debug, Clone)]
enum GroupBy {
    All,
    Labels(Vec<String>),
}

/// The flattened routing tree; the root is at position 0.
#[derive(Debug, Clone)]
pub(crate) struct RouteTree {
    routes: Vec<ResolvedRoute>,
    /// Positions of the roots: one, or (without a configured tree) one per receiver.
    roots: Vec<usize>,
}

/// The group an alert joins on one route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GroupId {
    pub(crate) route: usize,
    /// Values of the `group_by` labels (all labels for `...`), sorted by name.
    pub(crate) labels: BTreeMap<String, String>,
}

impl RouteTree {
    /// The tree of `route`, or one root per receiver without one.
    pub(crate) fn new(route: Option<&Route>, receivers: &[Receiver]) -> Self {
        let mut tree = Self {
            routes: Vec::new(),
            roots: Vec::new(),
        };
        let defaults = ResolvedRoute {
            receiver: String::new(),
            matchers: Vec::new(),
            group_by: GroupBy::Labels(vec!["alertname".to_owned()]),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            continue_matching: true,
            children: Vec::new(),
            path: "{}".to_owned(),
        };
        match route {
            Some(route) => {
                let root = tree.add(route, &defaults, true);
                tree.roots.push(root);
            }
            None => {
                for receiver in receivers {
                    let route = Route {
                        receiver: Some(receiver.name().to_owned()),
                        ..Route::default()
                    };
                    let root = tree.add(&route, &defaults, true);
                    tree.roots.push(root);
                }
            }
        }
        tree
    }

    fn add(&mut self, route: &Route, parent: &ResolvedRoute, root: bool) -> usize {
        let matchers = if root {
            Vec::new()
        } else {
            route.matchers.clone()
        };
        let path = if root {
            parent.path.clone()
        } else {
            let own: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
            format!("{}/{{{}}}", parent.path, own.join(","))
        };
        let resolved = ResolvedRoute {
            receiver: route
                .receiver
                .clone()
                .unwrap_or_else(|| parent.receiver.clone()),
            matchers,
            group_by: match &route.group_by {
                Some(labels) if labels.iter().any(|l| l == ALL_LABELS) => GroupBy::All,
                Some(labels) => GroupBy::Labels(labels.clone()),
                None => parent.group_by.clone(),
            },
            group_wait: route.group_wait.unwrap_or(parent.group_wait),
            group_interval: route.group_interval.unwrap_or(parent.group_interval),
            repeat_interval: route.repeat_interval.unwrap_or(parent.repeat_interval),
            continue_matching: route.continue_matching,
            children: Vec::new(),
            path,
        };
        let position = self.routes.len();
        self.routes.push(resolved.clone());
        let children: Vec<usize> = route
            .routes
            .iter()
            .map(|child| self.add(child, &resolved, false))
            .collect();
        self.routes[position].children = children;
        position
    }

    pub(crate) fn route(&self, position: usize) -> &ResolvedRoute {
        &self.routes[position]
    }

    /// The groups an alert with `labels` joins, one per route it takes.
    pub(crate) fn groups_for(&self, labels: &[Label]) -> Vec<GroupId> {
        let mut taken = Vec::new();
        for &root in &self.roots {
            self.walk(root, labels, &mut taken);
        }
        taken
            .into_iter()
            .map(|route| GroupId {
                route,
                labels: self.routes[route].group_labels(labels),
            })
            .collect()
    }

    /// Adds the routes `labels` take below `position`; whether `position` matched.
    fn walk(&self, position: usize, labels: &[Label], taken: &mut Vec<usize>) -> bool {
        let route = &self.routes[position];
        if !all_match(&route.matchers, labels) {
            return false;
        }
        let mut matched_child = false;
        for &child in &route.children {
            if self.walk(child, labels, taken) {
                matched_child = true;
                if !self.routes[child].continue_matching {
                    break;
                }
            }
        }
        if !matched_child {
            taken.push(position);
        }
        true
    }

    /// Alertmanager's group key: the route's matcher path and the group labels,
    /// `{}/{severity="page"}:{alertname="HostDown"}`. Stable across restarts, so
    /// receivers can deduplicate on it.
    pub(crate) fn group_key(&self, group: &GroupId) -> String {
        let labels: Vec<String> = group
            .labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        format!("{}:{{{}}}", self.routes[group.route].path, labels.join(","))
    }
}

impl ResolvedRoute {
    fn group_labels(&self, labels: &[Label]) -> BTreeMap<String, String> {
        match &self.group_by {
            GroupBy::All => labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|name| {
                    vigil_proto::labels::find(labels, name)
                        .map(|value| (name.clone(), value.to_owned()))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn tree(yaml: &str) -> RouteTree {
        let route: Route = vigil_config::parse_yaml("route.yaml", yaml).unwrap();
        RouteTree::new(Some(&route), &[])
    }

    fn receivers(tree: &RouteTree, labels: &[Label]) -> Vec<String> {
        tree.groups_for(labels)
            .iter()
            .map(|group| tree.route(group.route).receiver.clone())
            .collect()
    }

    const TREE: &str = r#"
receiver: default
group_by: [alertname]
routes:
  - matchers: ['severity="page"']
    receiver: pager
    continue: true
    group_wait: 10s
  - matchers: ['team=~"db|storage"']
    receiver: db-team
    routes:
      - matchers: ['env!="prod"']
        receiver: db-staging
  - matchers: ['host=~"web-.*"']
    receiver: web-team
"#;

    #[test]
    fn the_first_matching_route_wins_unless_it_continues() {
        let tree = tree(TREE);
        let labels = |pairs: &[(&str, &str)]| -> Vec<Label> {
            pairs.iter().map(|(n, v)| label(*n, *v)).collect()
        };
        assert_eq!(
            receivers(&tree, &labels(&[("alertname", "X")])),
            ["default"]
        );
        assert_eq!(
            receivers(
                &tree,
                &labels(&[("severity", "page"), ("team", "db"), ("env", "prod")])
            ),
            ["pager", "db-team"]
        );
        assert_eq!(
            receivers(&tree, &labels(&[("team", "storage"), ("host", "web-1")])),
            ["db-staging"],
            "a matching child is taken instead of its parent, and stops the siblings"
        );
        assert_eq!(
            receivers(&tree, &labels(&[("host", "web-1")])),
            ["web-team"]
        );
    }

    #[test]
    fn children_inherit_grouping_and_timers() {
        let tree = tree(TREE);
        let groups = tree.groups_for(&[
            label("alertname", "HostDown"),
            label("severity", "page"),
            label("host", "web-1"),
        ]);
        let pager = tree.route(groups[0].route);
        assert_eq!(pager.group_wait, Duration::from_secs(10));
        assert_eq!(pager.group_interval, DEFAULT_GROUP_INTERVAL);
        assert_eq!(pager.repeat_interval, DEFAULT_REPEAT_INTERVAL);
        assert_eq!(
            tree.group_key(&groups[0]),
            r#"{}/{severity="page"}:{alertname="HostDown"}"#
        );
        assert_eq!(
            tree.group_key(&groups[1]),
            r#"{}/{host=~"web-.*"}:{alertname="HostDown"}"#
        );
    }

    #[test]
    fn group_by_all_labels_makes_one_group_per_label_set() {
        let tree = tree("receiver: r\ngroup_by: ['...']\n");
        let one = tree.groups_for(&[label("alertname", "A"), label("host", "h1")]);
        let two = tree.groups_for(&[label("alertname", "A"), label("host", "h2")]);
        assert_ne!(one, two);
        assert_eq!(tree.group_key(&one[0]), r#"{}:{alertname="A",host="h1"}"#);
    }

    #[test]
    fn without_a_tree_every_receiver_gets_every_alert_grouped_by_alertname() {
        let tree = RouteTree::new(
            None,
            &[Receiver::console(), Receiver::Console { name: "b".into() }],
        );
        let groups = tree.groups_for(&[label("alertname", "A"), label("host", "h1")]);
        let names: Vec<_> = groups
            .iter()
            .map(|g| tree.route(g.route).receiver.as_str())
            .collect();
        assert_eq!(names, ["console", "b"]);
        assert_eq!(tree.group_key(&groups[0]), r#"{}:{alertname="A"}"#);
    }
}

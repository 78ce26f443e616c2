//! Where a setting is written: the line and column of a field path
//! (`index.max_documents`, `snmp.targets[2].interval`) in a YAML text, so that a
//! value refused after deserializing (out of range, contradicting another) is
//! reported at its line, as a syntax error is.

use serde_saphyr::granit_parser::{Event, Marker, Options, Parser, StrInput};
use std::fmt;

/// A place in a file: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<Marker> for Position {
    fn from(marker: Marker) -> Self {
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// Where the setting an error message names first is written: messages name it
/// in backticks at their start ("`kafka.brokers` must list at least one
/// broker"). `None` when the message names none or the text has no such field
/// and no part of its path.
pub fn locate_setting_of(text: &str, message: &str) -> Option<Position> {
    let field = message.strip_prefix('`')?.split('`').next()?;
    locate(text, field)
}

/// Where the value of `field` starts in `text`; for a field that is absent (a
/// default that does not fit another setting), where its nearest written parent
/// starts. `None` for text that does not parse or a path without any written part.
pub fn locate(text: &str, field: &str) -> Option<Position> {
    let path = parse_path(field)?;
    let root = read_tree(text)?;
    let mut node = &root;
    let mut found = None;
    for step in &path {
        let next = match (step, node) {
            (Step::Key(key), Node::Mapping(_, entries)) => entries
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            (Step::Index(index), Node::Sequence(_, items)) => items.get(*index),
            _ => None,
        };
        match next {
            Some(next) => {
                node = next;
                found = Some(node.start());
            }
            None => break,
        }
    }
    found
}

/// One step of a field path.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` → `a`, `b`, `2`, `c`; `None` for anything else.
fn parse_path(field: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in field.split('.') {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(key, rest)| {
            (key, &part[key.len()..][..rest.len() + 1])
        });
        if key.is_empty() {
            return None;
        }
        steps.push(Step::Key(key.to_owned()));
        for index in indexes.split('[').skip(1) {
            steps.push(Step::Index(index.strip_suffix(']')?.parse().ok()?));
        }
    }
    Some(steps)
}

/// The document as a tree of where each node starts.
#[derive(Debug)]
enum Node {
    Scalar(Marker),
    Sequence(Marker, Vec<Node>),
    Mapping(Marker, Vec<(String, Node)>),
}

impl Node {
    fn start(&self) -> Position {
        match self {
            Self::Scalar(start) | Self::Sequence(start, _) | Self::Mapping(start, _) => {
                Position::from(*start)
            }
        }
    }
}

type TextParser<'a> = Parser<'a, StrInput<'a>>;

/// The first document of `text`, or `None` if it does not parse.
fn read_tree(text: &str) -> Option<Node> {
    let mut options = Options::default();
    options.emit_comments = false;
    let mut parser = Parser::new_from_str_with_options(text, options);
    loop {
        let (event, start) = next_content(&mut parser)?;
        match event {
            Event::StreamEnd => return None,
            Event::DocumentStart(..) | Event::StreamStart => {}
            _ => return read_node(&mut parser, event, start),
        }
    }
}

/// The next event and where it starts; `None` at an error.
fn next_content<'a>(parser: &mut TextParser<'a>) -> Option<(Event<'a>, Marker)> {
    let (event, span) = parser.next_event()?.ok()?;
    Some((event, span.start))
}

/// The node that begins with `event` at `start`, reading its children.
fn read_node(parser: &mut TextParser<'_>, event: Event<'_>, start: Marker) -> Option<Node> {
    match event {
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                let (event, item_start) = next_content(parser)?;
                if matches!(event, Event::SequenceEnd) {
                    return Some(Node::Sequence(start, items));
                }
                items.push(read_node(parser, event, item_start)?);
            }
        }
        Event::MappingStart(..) => {
            let mut entries = Vec::new();
            loop {
                let (event, key_start) = next_content(parser)?;
                if matches!(event, Event::MappingEnd) {
                    return Some(Node::Mapping(start, entries));
                }
                let key = match &event {
                    Event::Scalar(key, ..) => key.to_string(),
                    _ => String::new(),
                };
                read_node(parser, event, key_start)?;
                let (event, value_start) = next_content(parser)?;
                entries.push((key, read_node(parser, event, value_start)?));
            }
        }
        _ => Some(Node::Scalar(start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
kafka: {brokers: 'k:9092'}
index:
  # the bulk size
  max_documents: 0
logs:
  - path: /var/log/a.log
  - {path: /var/log/b.log, dataset: b}
";

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn a_field_is_found_at_its_value() {
        assert_eq!(locate(TEXT, "index.max_documents"), at(4, 18));
        assert_eq!(locate(TEXT, "kafka.brokers"), at(1, 18));
        assert_eq!(locate(TEXT, "logs[0].path"), at(6, 11));
        assert_eq!(locate(TEXT, "logs[1].dataset"), at(7, 37));
    }

    #[test]
    fn an_absent_field_is_found_at_its_nearest_parent() {
        assert_eq!(locate(TEXT, "index.linger"), at(4, 3));
        assert_eq!(locate(TEXT, "logs[5].path"), at(6, 3));
        assert_eq!(locate(TEXT, "etcd.endpoints"), None);
    }

    #[test]
    fn the_setting_a_message_names_first_is_located() {
        let message = "`logs[1].dataset` must not be empty, see `dataset`";
        assert_eq!(locate_setting_of(TEXT, message), at(7, 37));
        assert_eq!(locate_setting_of(TEXT, "no setting named"), None);
    }

    #[test]
    fn broken_paths_and_texts_locate_nothing() {
        assert_eq!(locate(TEXT, "logs[x].path"), None);
        assert_eq!(locate(TEXT, ".index"), None);
        assert_eq!(locate("a: [1, 2", "a"), None);
        assert_eq!(locate("", "a"), None);
    }
}

//! What `setup` tells its user: a line per object installed, and the totals, while it
//! prepares Elasticsearch and Kibana for the index stage.

use super::{SetupError, SetupSummary};
use std::io::Write;

/// How an object compares with what the server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Created,
    Updated,
    Unchanged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// Counts `change` and prints its line.
pub(super) fn report(
    progress: &mut dyn Write,
    summary: &mut SetupSummary,
    kind: &str,
    name: &str,
    change: Change,
) -> Result<(), SetupError> {
    match change {
        Change::Created => summary.created += 1,
        Change::Updated => summary.updated += 1,
        Change::Unchanged => summary.unchanged += 1,
    }
    writeln!(progress, "  {kind:<20} {name:<32} {}", change.as_str())?;
    Ok(())
}

/// The last line: the totals, and the parts skipped.
pub(super) fn write_totals(
    progress: &mut dyn Write,
    summary: &SetupSummary,
    kibana_configured: bool,
) -> Result<(), SetupError> {
    write!(
        progress,
        "done: {} created, {} updated, {} unchanged",
        summary.created, summary.updated, summary.unchanged
    )?;
    if kibana_configured {
        write!(
            progress,
            ", {} saved objects imported",
            summary.saved_objects
        )?;
    }
    if summary.skipped.is_empty() {
        writeln!(progress)?;
    } else {
        writeln!(progress, "; skipped: {}", summary.skipped.join(", "))?;
    }
    Ok(())
}

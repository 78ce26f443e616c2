//! The Kibana part of `setup`, its last step: the saved objects of `dashboards/kibana`
//! are imported so the documents the index stage writes can be looked at right away.

use super::dashboards::SavedObjects;
use super::{SetupError, SetupSummary};
use crate::index::kibana::KibanaClient;
use std::io::Write;
use std::path::Path;

/// Imports every file of `saved_objects` into `kibana`, data views first, printing a
/// line per file to `progress`; says so when Kibana is not configured.
pub(super) async fn import_saved_objects(
    kibana: Option<&KibanaClient>,
    saved_objects: &[SavedObjects],
    summary: &mut SetupSummary,
    progress: &mut dyn Write,
) -> Result<(), SetupError> {
    match kibana {
        Some(kibana) => {
            writeln!(progress, "Kibana at {}", kibana.url())?;
            for file in saved_objects {
                let ndjson: String = file
                    .objects
                    .iter()
                    .map(|object| format!("{object}\n"))
                    .collect();
                let imported = kibana.import(Path::new(&file.path), &ndjson).await?;
                summary.saved_objects += imported;
                let name = Path::new(&file.path)
                    .file_name()
                    .map_or_else(|| file.path.clone(), |n| n.to_string_lossy().into_owned());
                writeln!(
                    progress,
                    "  {:<20} {:<32} {imported} imported",
                    "saved objects", name
                )?;
            }
        }
        None => writeln!(
            progress,
            "Kibana: no URL configured (`index.kibana.url` or --kibana-url); saved objects not imported"
        )?,
    }
    Ok(())
}

//! The journal source's position: the cursor of the newest entry the bus
//! acknowledged (with every entry before it), kept in `data_dir` so that a
//! restarted agent reads on after it. It plays the part the checkpoint file
//! plays for log files, and is written the same way: a temporary file in the
//! same directory, `sync_all`, `rename`, in a versioned format.

use super::progress::CursorState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

const FILE_NAME: &str = "journald-cursor.json";

/// The cursor file could not be read or written.
#[derive(Debug, Error)]
pub(crate) enum CursorFileError {
    #[error("journal cursor file {path} could not be read: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("journal cursor file {path} is not a cursor file ({reason})")]
    Corrupt { path: String, reason: String },
    #[error("journal cursor file {path} could not be written: {cause}")]
    Write { path: String, cause: std::io::Error },
}

/// What the file holds.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "version")]
enum CursorFile {
    #[serde(rename = "1")]
    V1 { cursor: String },
}

/// The cursor file in one data directory.
#[derive(Debug, Clone)]
pub(crate) struct CursorFilePath(PathBuf);

impl CursorFilePath {
    pub(crate) fn in_dir(data_dir: &Path) -> Self {
        Self(data_dir.join(FILE_NAME))
    }

    /// The saved cursor; `None` when there is no file yet.
    pub(crate) fn read(&self) -> Result<Option<String>, CursorFileError> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => {
                return Err(CursorFileError::Read {
                    path: self.0.display().to_string(),
                    cause,
                });
            }
        };
        match serde_json::from_str::<CursorFile>(&text) {
            Ok(CursorFile::V1 { cursor }) if !cursor.is_empty() => Ok(Some(cursor)),
            Ok(CursorFile::V1 { .. }) => Err(self.corrupt("the cursor is empty".to_owned())),
            Err(error) => Err(self.corrupt(error.to_string())),
        }
    }

    fn corrupt(&self, reason: String) -> CursorFileError {
        CursorFileError::Corrupt {
            path: self.0.display().to_string(),
            reason,
        }
    }

    /// Replaces the file with one holding `cursor`, atomically.
    pub(crate) fn write(&self, cursor: &str) -> Result<(), CursorFileError> {
        let error = |cause| CursorFileError::Write {
            path: self.0.display().to_string(),
            cause,
        };
        let temporary = self.0.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&CursorFile::V1 {
            cursor: cursor.to_owned(),
        })
        .map_err(|json| error(json.into()))?;
        let mut file = std::fs::File::create(&temporary).map_err(error)?;
        file.write_all(&body).map_err(error)?;
        file.sync_all().map_err(error)?;
        std::fs::rename(&temporary, &self.0).map_err(error)?;
        Ok(())
    }

    /// Writes the acknowledged cursor of `state` if it changed since the last
    /// write; whether it wrote.
    pub(crate) fn write_if_changed(&self, state: &CursorState) -> Result<bool, CursorFileError> {
        let Some(cursor) = state.unwritten() else {
            return Ok(false);
        };
        self.write(&cursor)?;
        state.written(cursor);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_cursor_is_read_back_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = CursorFilePath::in_dir(dir.path());
        assert_eq!(file.read().unwrap(), None);
        file.write("s=1;i=2").unwrap();
        file.write("s=1;i=3").unwrap();
        assert_eq!(file.read().unwrap().as_deref(), Some("s=1;i=3"));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": \"1\""), "{text}");
        assert!(!dir.path().join("journald-cursor.json.tmp").exists());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{\"cursor\": 3").unwrap();
        let error = CursorFilePath::in_dir(dir.path()).read().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("journald-cursor.json is not a cursor file"),
            "{error}"
        );
    }
}

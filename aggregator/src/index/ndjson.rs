//! The all-in-one mode's document sink: instead of Elasticsearch, one NDJSON file per
//! index (`<data_dir>/<index>.ndjson`), one document per line with its `_id` as the
//! first field, flushed after every write so `tail -f` and `jq` see it at once.
//!
//! The in-process bus never redelivers, so every document is reported as written.

use super::documents::Document;
use super::sink::{Outcome, SinkError, WriteReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Appends documents to `<dir>/<index>.ndjson`.
#[derive(Debug)]
pub struct NdjsonSink {
    dir: PathBuf,
    /// Open files by index, kept across writes; one write at a time.
    files: Mutex<HashMap<String, File>>,
}

impl NdjsonSink {
    /// A sink writing into `dir`, which is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SinkError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir,
            files: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file documents of `index` are appended to.
    pub fn path(&self, index: &str) -> PathBuf {
        self.dir.join(format!("{index}.ndjson"))
    }

    pub(crate) async fn write(&self, documents: &[Document]) -> Result<WriteReport, SinkError> {
        let mut lines_by_index: Vec<(&str, Vec<u8>)> = Vec::new();
        for document in documents {
            let lines = match lines_by_index
                .iter_mut()
                .position(|(index, _)| *index == document.index)
            {
                Some(position) => &mut lines_by_index[position].1,
                None => {
                    lines_by_index.push((&document.index, Vec::new()));
                    &mut lines_by_index.last_mut().expect("just pushed").1
                }
            };
            append_line(lines, document);
        }
        let mut files = self.files.lock().await;
        for (index, lines) in lines_by_index {
            let path = self.path(index);
            let io_error = |source| SinkError::Io {
                path: path.display().to_string(),
                source,
            };
            if !files.contains_key(index) {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .map_err(io_error)?;
                files.insert(index.to_owned(), file);
            }
            let file = files.get_mut(index).expect("opened above");
            file.write_all(&lines).await.map_err(io_error)?;
            file.flush().await.map_err(io_error)?;
        }
        Ok(WriteReport {
            outcomes: vec![Outcome::Written; documents.len()],
            ..WriteReport::default()
        })
    }
}

/// `{"_id":"<id>", <the document's own fields>}` and a newline.
fn append_line(out: &mut Vec<u8>, document: &Document) {
    out.extend_from_slice(b"{\"_id\":");
    serde_json::to_writer(&mut *out, &document.id).expect("a string always serializes");
    match document.body.strip_prefix(b"{") {
        Some(fields) if fields != b"}" => {
            out.push(b',');
            out.extend_from_slice(fields);
        }
        _ => out.push(b'}'),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn document(index: &str, id: &str, body: Value) -> Document {
        Document {
            index: index.into(),
            id: id.into(),
            body: serde_json::to_vec(&body).unwrap(),
            origin: 0,
            record: 0,
        }
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn documents_are_appended_to_one_file_per_index_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let sink = NdjsonSink::new(dir.path().join("data")).unwrap();
        let report = sink
            .write(&[
                document("vigil-logs", "a1", json!({"message": "one"})),
                document("vigil-metrics", "m1", json!({"metrics": {"x": 1}})),
                document("vigil-logs", "a2", json!({})),
            ])
            .await
            .unwrap();
        assert_eq!(report.outcomes, vec![Outcome::Written; 3]);
        sink.write(&[document("vigil-logs", "a3", json!({"message": "three"}))])
            .await
            .unwrap();

        assert_eq!(
            read_lines(&dir.path().join("data/vigil-logs.ndjson")),
            vec![
                json!({"_id": "a1", "message": "one"}),
                json!({"_id": "a2"}),
                json!({"_id": "a3", "message": "three"}),
            ]
        );
        assert_eq!(
            read_lines(&sink.path("vigil-metrics")),
            vec![json!({"_id": "m1", "metrics": {"x": 1}})]
        );
        let text = std::fs::read_to_string(sink.path("vigil-logs")).unwrap();
        assert!(
            text.starts_with(r#"{"_id":"a1","message":"one"}"#),
            "{text}"
        );
    }
}

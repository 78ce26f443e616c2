//! The body of a bulk request, the bytes the bulk writer sends to Elasticsearch: a
//! `create` action line and the document line for each document still to write.

use crate::index::documents::Document;

/// The NDJSON body: a `create` action line and the document line for each document.
pub(super) fn bulk_body(documents: &[Document], pending: &[usize]) -> Vec<u8> {
    const ACTION_START: &[u8] = br#"{"create":{"_index":"#;
    const ID_KEY: &[u8] = br#","_id":"#;
    let size = pending
        .iter()
        .map(|&position| {
            let document = &documents[position];
            document.body.len()
                + document.index.len()
                + document.id.len()
                + ACTION_START.len()
                + ID_KEY.len()
                + 8
        })
        .sum();
    let mut body = Vec::with_capacity(size);
    for &position in pending {
        let document = &documents[position];
        body.extend_from_slice(ACTION_START);
        push_json_string(&mut body, &document.index);
        body.extend_from_slice(ID_KEY);
        push_json_string(&mut body, &document.id);
        body.extend_from_slice(b"}}\n");
        body.extend_from_slice(&document.body);
        body.push(b'\n');
    }
    body
}

/// `text` as a JSON string; index names and hex ids need no escaping, so they are
/// copied as they are.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
    {
        serde_json::to_writer(&mut *out, text).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

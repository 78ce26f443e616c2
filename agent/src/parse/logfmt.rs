//! The `logfmt` step: `key=value key2="quoted \"value\""` pairs, as Go and Heroku
//! services write them. Written here rather than taken from a crate: the format
//! is a few lines, and the crates for it allocate a map per line.

use super::fields::Fields;

/// Reads the pairs of `text` into `fields`; a line without any `key=` is refused.
pub(crate) fn parse(text: &str, fields: &mut Fields) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut position = 0;
    let mut pairs = 0;
    let mut unquoted = String::new();
    while position < bytes.len() {
        while position < bytes.len() && bytes[position] == b' ' {
            position += 1;
        }
        let key_start = position;
        while position < bytes.len() && !matches!(bytes[position], b'=' | b' ') {
            position += 1;
        }
        let key = &text[key_start..position];
        if position >= bytes.len() || bytes[position] != b'=' {
            if !key.is_empty() {
                // A bare word is a flag, as logfmt's own libraries read it.
                fields.add(key, "true");
            }
            continue;
        }
        position += 1;
        if key.is_empty() {
            return Err(format!("`=` without a key at byte {}", position - 1));
        }
        if bytes.get(position) == Some(&b'"') {
            position += 1;
            unquoted.clear();
            let mut closed = false;
            let mut chunk_start = position;
            while position < bytes.len() {
                match bytes[position] {
                    b'\\' if position + 1 < bytes.len() => {
                        unquoted.push_str(&text[chunk_start..position]);
                        match bytes[position + 1] {
                            b'n' => unquoted.push('\n'),
                            b't' => unquoted.push('\t'),
                            b'r' => unquoted.push('\r'),
                            escaped if escaped.is_ascii() => unquoted.push(escaped as char),
                            _ => unquoted.push('\\'),
                        }
                        position += if bytes[position + 1].is_ascii() { 2 } else { 1 };
                        chunk_start = position;
                    }
                    b'"' => {
                        unquoted.push_str(&text[chunk_start..position]);
                        position += 1;
                        closed = true;
                        break;
                    }
                    _ => position += 1,
                }
            }
            if !closed {
                return Err(format!("the quoted value of `{key}` is not closed"));
            }
            fields.add(key, &unquoted);
        } else {
            let value_start = position;
            while position < bytes.len() && bytes[position] != b' ' {
                position += 1;
            }
            fields.add(key, &text[value_start..position]);
        }
        pairs += 1;
    }
    if pairs == 0 {
        return Err("no `key=value` pairs".to_owned());
    }
    Ok(())
}

//! Lines encoded straight into the protobuf bytes of a `LogBatch` as they are read:
//! the step between line splitting and the shipper. A line's text is copied once,
//! from the read buffer into the batch, and is never held as a struct of its own;
//! a batch in flight is its encoded bytes, ready to be sent again as they are.

use crate::parse::Fields;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use vigil_proto::v1::{LogSource, Resource};

/// Field numbers of `LogBatch` (vigil.proto).
const BATCH_RESOURCE: u32 = 1;
const BATCH_SOURCE: u32 = 2;
const BATCH_LINES: u32 = 3;

/// Field numbers of `LogLine` (vigil.proto).
const LINE_OFFSET: u32 = 1;
const LINE_EVENT_TIME: u32 = 2;
const LINE_OBSERVED_TIME: u32 = 3;
const LINE_MESSAGE: u32 = 4;
const LINE_FIELDS: u32 = 5;
const LINE_TRUNCATED: u32 = 6;
const LINE_INVALID_UTF8: u32 = 7;
const LINE_LENGTH: u32 = 8;

/// Field numbers of `Label` (vigil.proto).
const LABEL_NAME: u32 = 1;
const LABEL_VALUE: u32 = 2;

/// The fields of a line no parser read.
pub(crate) static NO_FIELDS: Fields = Fields::new();

/// The `Label` a line shipped before its newline carries: `log.partial = "true"`,
/// encoded (field 1 name, field 2 value).
const PARTIAL_LABEL: &[u8] = b"\x0a\x0blog.partial\x12\x04true";

/// One line as it goes on the wire, borrowing its text. Every field number is
/// below 16, so every key is one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireLine<'a> {
    /// Offset of the line's first byte in its file.
    pub(crate) offset: u64,
    /// Bytes the line spans in the file, its newline included.
    pub(crate) length: u64,
    /// When the agent read it.
    pub(crate) observed_unix_nano: i64,
    /// When it happened: its own time if a parser found one, else when it was read.
    pub(crate) event_unix_nano: i64,
    pub(crate) message: &'a [u8],
    /// What parsers found in it, each a `Label` of `LogLine.fields`.
    pub(crate) fields: &'a Fields,
    pub(crate) truncated: bool,
    pub(crate) invalid_utf8: bool,
    /// Shipped before its newline arrived: carries the field `log.partial`.
    pub(crate) partial: bool,
}

impl WireLine<'_> {
    /// Encoded length of the `LogLine` message, without its key and length prefix.
    fn body_len(&self) -> usize {
        let varint = |value: u64| {
            if value == 0 {
                0
            } else {
                1 + encoded_len_varint(value)
            }
        };
        let delimited = |len: usize| {
            if len == 0 {
                0
            } else {
                1 + encoded_len_varint(len as u64) + len
            }
        };
        varint(self.offset)
            + varint(self.event_unix_nano as u64)
            + varint(self.observed_unix_nano as u64)
            + delimited(self.message.len())
            + self
                .fields
                .iter()
                .map(|(name, value)| delimited(label_len(name, value)))
                .sum::<usize>()
            + if self.partial {
                delimited(PARTIAL_LABEL.len())
            } else {
                0
            }
            + 2 * usize::from(self.truncated)
            + 2 * usize::from(self.invalid_utf8)
            + varint(self.length)
    }

    /// Bytes this line adds to its batch, key and length prefix included.
    pub(crate) fn encoded_len(&self) -> usize {
        let body = self.body_len();
        1 + encoded_len_varint(body as u64) + body
    }

    /// Appends the line as one `lines` entry of a `LogBatch`, in field order and
    /// leaving out default values, as prost does.
    fn encode(&self, buf: &mut Vec<u8>) {
        encode_key(BATCH_LINES, WireType::LengthDelimited, buf);
        encode_varint(self.body_len() as u64, buf);
        let varint = |field: u32, value: u64, buf: &mut Vec<u8>| {
            if value != 0 {
                encode_key(field, WireType::Varint, buf);
                encode_varint(value, buf);
            }
        };
        varint(LINE_OFFSET, self.offset, buf);
        varint(LINE_EVENT_TIME, self.event_unix_nano as u64, buf);
        varint(LINE_OBSERVED_TIME, self.observed_unix_nano as u64, buf);
        let delimited = |field: u32, bytes: &[u8], buf: &mut Vec<u8>| {
            if !bytes.is_empty() {
                encode_key(field, WireType::LengthDelimited, buf);
                encode_varint(bytes.len() as u64, buf);
                buf.extend_from_slice(bytes);
            }
        };
        delimited(LINE_MESSAGE, self.message, buf);
        for (name, value) in self.fields.iter() {
            encode_key(LINE_FIELDS, WireType::LengthDelimited, buf);
            encode_varint(label_len(name, value) as u64, buf);
            delimited(LABEL_NAME, name.as_bytes(), buf);
            delimited(LABEL_VALUE, value.as_bytes(), buf);
        }
        if self.partial {
            delimited(LINE_FIELDS, PARTIAL_LABEL, buf);
        }
        varint(LINE_TRUNCATED, u64::from(self.truncated), buf);
        varint(LINE_INVALID_UTF8, u64::from(self.invalid_utf8), buf);
        varint(LINE_LENGTH, self.length, buf);
    }
}

/// Encoded length of the `Label` `name = value`, without key and length prefix.
fn label_len(name: &str, value: &str) -> usize {
    let delimited = |len: usize| {
        if len == 0 {
            0
        } else {
            1 + encoded_len_varint(len as u64) + len
        }
    };
    delimited(name.len()) + delimited(value.len())
}

/// A batch of lines ready for the bus: the encoded `LogBatch` and what the shipper
/// needs to know of it.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    /// The Kafka key: the resource id.
    pub(crate) key: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) lines: u64,
    /// Bytes the lines span in their file.
    pub(crate) source_bytes: u64,
}

/// The lines of the batch in progress, already encoded.
#[derive(Debug, Default)]
pub(crate) struct BatchEncoder {
    bytes: Vec<u8>,
    lines: u64,
    source_bytes: u64,
    /// Where the last line pushed ends in its file.
    end: u64,
}

impl BatchEncoder {
    /// Appends `line`.
    pub(crate) fn push(&mut self, line: &WireLine<'_>) {
        line.encode(&mut self.bytes);
        self.lines += 1;
        self.source_bytes += line.length;
        self.end = line.offset + line.length;
    }

    /// Encoded size of the lines so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Where the last line pushed ends in its file.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Forgets the lines so far.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.lines = 0;
        self.source_bytes = 0;
    }

    /// Completes the batch with its resource and source, and starts an empty one.
    /// Those two fields follow the lines on the wire: a protobuf decoder takes the
    /// fields of a message in any order.
    pub(crate) fn finish(&mut self, resource: &Resource, source: &LogSource) -> EncodedBatch {
        let mut payload = std::mem::take(&mut self.bytes);
        prost::encoding::message::encode(BATCH_RESOURCE, resource, &mut payload);
        prost::encoding::message::encode(BATCH_SOURCE, source, &mut payload);
        EncodedBatch {
            key: resource.id.clone(),
            payload,
            lines: std::mem::take(&mut self.lines),
            source_bytes: std::mem::take(&mut self.source_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use vigil_proto::Payload;
    use vigil_proto::v1::{Label, LogBatch, LogLine};

    fn resource() -> Resource {
        Resource {
            id: "web-1".into(),
            host_name: "web-1.example".into(),
            ..Resource::default()
        }
    }

    fn source() -> LogSource {
        LogSource {
            path: "/var/log/app.log".into(),
            source_id: "0123abcd".into(),
            device: 2049,
            inode: 77,
            dataset: "app".into(),
        }
    }

    /// The same line built the ordinary way, for prost to encode.
    fn log_line(line: &WireLine<'_>) -> LogLine {
        LogLine {
            offset: line.offset,
            event_time_unix_nano: line.event_unix_nano,
            observed_time_unix_nano: line.observed_unix_nano,
            message: line.message.to_vec(),
            fields: line
                .fields
                .iter()
                .map(|(name, value)| Label {
                    name: name.into(),
                    value: value.into(),
                })
                .chain(line.partial.then(|| Label {
                    name: "log.partial".into(),
                    value: "true".into(),
                }))
                .collect(),
            truncated: line.truncated,
            invalid_utf8: line.invalid_utf8,
            length: line.length,
        }
    }

    type Line = ((u64, u64, i64, i64), Vec<u8>, Fields, bool, bool, bool);

    fn fields() -> impl Strategy<Value = Fields> {
        proptest::collection::vec(("[a-z.]{1,12}", "\\PC{0,20}"), 0..4).prop_map(|pairs| {
            let mut fields = Fields::default();
            for (name, value) in pairs {
                fields.add_verbatim(&name, &value);
            }
            fields
        })
    }

    fn wire_line() -> impl Strategy<Value = Line> {
        (
            (
                prop_oneof![Just(0u64), 0..u64::MAX / 2],
                prop_oneof![Just(0u64), 1u64..300, 0..u64::MAX / 64],
                prop_oneof![Just(0i64), any::<i64>()],
                prop_oneof![Just(0i64), any::<i64>()],
            ),
            proptest::collection::vec(any::<u8>(), 0..300),
            fields(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
    }

    proptest! {
        /// The hand encoding decodes to exactly the batch prost would have built,
        /// and each line's computed size is what it adds to the batch.
        #[test]
        fn encoded_lines_decode_to_the_batch_prost_would_build(
            lines in proptest::collection::vec(wire_line(), 0..20)
        ) {
            let lines: Vec<WireLine<'_>> = lines
                .iter()
                .map(|((offset, length, observed, event), message, fields, truncated, invalid_utf8, partial)| WireLine {
                    offset: *offset,
                    length: *length,
                    observed_unix_nano: *observed,
                    event_unix_nano: *event,
                    message,
                    fields,
                    truncated: *truncated,
                    invalid_utf8: *invalid_utf8,
                    partial: *partial,
                })
                .collect();
            let mut encoder = BatchEncoder::default();
            for line in &lines {
                let before = encoder.len();
                encoder.push(line);
                prop_assert_eq!(encoder.len() - before, line.encoded_len());
            }
            prop_assert_eq!(encoder.lines(), lines.len() as u64);
            let batch = encoder.finish(&resource(), &source());
            let expected = LogBatch {
                resource: Some(resource()),
                source: Some(source()),
                lines: lines.iter().map(log_line).collect(),
            };
            prop_assert_eq!(LogBatch::decode(batch.payload.as_slice()).unwrap(), expected.clone());
            prop_assert_eq!(batch.key, expected.key());
            prop_assert_eq!(batch.lines, lines.len() as u64);
            prop_assert_eq!(batch.source_bytes, lines.iter().map(|line| line.length).sum::<u64>());
            prop_assert!(encoder.is_empty());
        }
    }

    #[test]
    fn the_partial_label_is_the_encoded_log_partial_field() {
        let label = Label {
            name: "log.partial".into(),
            value: "true".into(),
        };
        assert_eq!(label.encode_to_vec(), PARTIAL_LABEL);
    }
}

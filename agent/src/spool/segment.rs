//! The spool's file format: append-only segment files of checksummed records, each
//! one metric batch on its way to Kafka with the topic and key it goes under.
//!
//! A segment starts with [`SEGMENT_MAGIC`], then records follow back to back:
//!
//! ```text
//! u32 LE  body length
//! u64 LE  xxh3-64 of the body
//! body:   u32 LE samples, u16 LE topic length, topic, u16 LE key length, key,
//!         payload (the encoded MetricBatch, to the end of the body)
//! ```
//!
//! The format is Vigil's own because what it needs is small (append, read in order,
//! notice a torn or corrupted record) and the embedded queue crates either keep
//! their index in memory or bring a database along; xxh3 is the checksum the
//! agent already uses for file fingerprints.

use std::fmt;
use std::io::{self, Read};
use xxhash_rust::xxh3::xxh3_64;

/// The first bytes of every segment file: the format and its version.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"VGSPOOL1";
/// Bytes before a record's body: its length and its checksum.
const RECORD_HEADER_BYTES: u64 = 12;

/// One spooled metric batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) topic: String,
    /// The Kafka key: the resource the batch is about.
    pub(crate) key: String,
    /// How many samples the batch holds, so that a dropped batch is counted in
    /// samples without decoding it.
    pub(crate) samples: u32,
    /// The encoded `MetricBatch`.
    pub(crate) payload: Vec<u8>,
}

impl Record {
    /// The record as written to a segment: header, then body.
    pub(super) fn encode(&self) -> Vec<u8> {
        let topic = truncated(&self.topic);
        let key = truncated(&self.key);
        let body_len = 4 + 2 + topic.len() + 2 + key.len() + self.payload.len();
        let mut bytes = Vec::with_capacity(RECORD_HEADER_BYTES as usize + body_len);
        bytes.extend_from_slice(&(body_len as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&self.samples.to_le_bytes());
        bytes.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        bytes.extend_from_slice(topic);
        bytes.extend_from_slice(&(key.len() as u16).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&self.payload);
        let checksum = xxh3_64(&bytes[RECORD_HEADER_BYTES as usize..]);
        bytes[4..12].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    fn decode_body(body: &[u8]) -> Result<Self, Damage> {
        let mut rest = body;
        let samples = u32::from_le_bytes(take::<4>(&mut rest)?);
        let topic = take_text(&mut rest, "topic")?;
        let key = take_text(&mut rest, "key")?;
        Ok(Self {
            topic,
            key,
            samples,
            payload: rest.to_vec(),
        })
    }
}

/// Topic names and keys are far below 64 KiB; a longer one is cut rather than
/// making a record that cannot be read back.
fn truncated(text: &str) -> &[u8] {
    &text.as_bytes()[..text.len().min(usize::from(u16::MAX))]
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], Damage> {
    let Some((head, tail)) = rest.split_first_chunk::<N>() else {
        return Err(Damage::Malformed("the body ends inside its header"));
    };
    *rest = tail;
    Ok(*head)
}

fn take_text(rest: &mut &[u8], what: &'static str) -> Result<String, Damage> {
    let len = usize::from(u16::from_le_bytes(take::<2>(rest)?));
    if rest.len() < len {
        return Err(Damage::Malformed(what));
    }
    let (text, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(text.to_vec()).map_err(|_| Damage::Malformed(what))
}

/// Why the bytes at some offset of a segment are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The file ends inside a record: a write the process or the machine did not
    /// finish.
    Torn,
    /// The checksum does not match the body: the bytes changed after they were
    /// written.
    Checksum,
    /// The checksum matches but the body is not a record (the named part is bad).
    Malformed(&'static str),
    /// The file does not start with the segment header.
    NotASegment,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Torn => f.write_str("the file ends inside a record (an unfinished write)"),
            Self::Checksum => f.write_str("the record's checksum does not match its bytes"),
            Self::Malformed(part) => write!(f, "the record's {part} is malformed"),
            Self::NotASegment => f.write_str("the file does not start with a spool header"),
        }
    }
}

/// What the next bytes of a segment hold.
#[derive(Debug)]
pub(super) enum Next {
    /// A record, and how many bytes it took.
    Record(Record, u64),
    /// The end of the segment, exactly at a record boundary.
    End,
    /// Bytes that are not a record; the segment must be cut here.
    Damaged(Damage),
}

/// Reads the record starting at the reader's position, with `remaining` bytes of
/// the segment left from there. Never reads past `remaining`, so a corrupted length
/// cannot make it allocate or read more than the file holds.
pub(super) fn read_record(reader: &mut impl Read, remaining: u64) -> io::Result<Next> {
    if remaining == 0 {
        return Ok(Next::End);
    }
    if remaining < RECORD_HEADER_BYTES {
        return Ok(Next::Damaged(Damage::Torn));
    }
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    reader.read_exact(&mut header)?;
    let body_len = u64::from(u32::from_le_bytes(
        header[..4].try_into().unwrap_or_default(),
    ));
    let checksum = u64::from_le_bytes(header[4..].try_into().unwrap_or_default());
    if body_len > remaining - RECORD_HEADER_BYTES {
        return Ok(Next::Damaged(Damage::Torn));
    }
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body)?;
    if xxh3_64(&body) != checksum {
        return Ok(Next::Damaged(Damage::Checksum));
    }
    Ok(match Record::decode_body(&body) {
        Ok(record) => Next::Record(record, RECORD_HEADER_BYTES + body_len),
        Err(damage) => Next::Damaged(damage),
    })
}

//! What the wire decoder targets assert of a payload, whichever batch type it
//! claims to be: the decoder never panics, a refusal reads as a sentence naming
//! the type, and what it accepts encodes to bytes it accepts again unchanged, so
//! a stage that re-publishes a batch (derive, the dead-letter topic) never turns
//! a good message into a bad one.

use vigil_proto::{DecodeError, Payload};

/// Decodes `payload` as `P`; checks the refusal or the round trip. Returns the
/// accepted batch.
pub fn decode_and_round_trip<P: Payload>(payload: &[u8]) -> Option<P> {
    match P::from_payload(payload) {
        Ok(batch) => {
            let _ = batch.key();
            let encoded = batch.to_payload();
            let again = P::from_payload(&encoded).unwrap_or_else(|error| {
                panic!("{} accepted, re-encoded and then refused: {error}", P::KIND)
            });
            assert_eq!(
                again.to_payload(),
                encoded,
                "{} changed on a round trip",
                P::KIND
            );
            Some(batch)
        }
        Err(error) => {
            assert_refusal_names_kind(&error, P::KIND);
            None
        }
    }
}

/// A refusal says which type was expected and why.
pub fn assert_refusal_names_kind(error: &DecodeError, kind: &str) {
    let message = error.to_string();
    assert!(
        message.contains(kind) && !message.ends_with(": "),
        "refusal `{message}` does not name {kind} and a reason"
    );
}

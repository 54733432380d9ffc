//! FIX tag=value text without QuickFIX: reading the fields of a message QuickFIX has already
//! accepted, the checksum, and outgoing messages as plain values.
//!
//! QuickFIX's `Message` and `SessionId` are not `Send`, so what crosses threads is text
//! ([`Fields`]) one way and [`OutMsg`] the other; the QuickFIX objects are built on the thread
//! that sends them.

/// The field separator.
pub const SOH: char = '\x01';

/// Fields of one message kept at most (a message with more is cut: QuickFIX has already
/// checked it against the data dictionary, so this only bounds memory).
pub const MESSAGE_FIELDS_MAX: usize = 1024;

/// The FIX checksum (tag 10): the byte sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// The fields of one message, in wire order (repeating groups stay flat), borrowed from its
/// text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields<'a>(Vec<(u32, &'a str)>);

impl<'a> Fields<'a> {
    /// Splits `tag=value<SOH>` text; pieces that are not `number=value` are skipped.
    pub fn parse(raw: &'a str) -> Fields<'a> {
        Fields(fields_of(raw).take(MESSAGE_FIELDS_MAX).collect())
    }

    /// The first value of a tag.
    pub fn get(&self, tag: u32) -> Option<&'a str> {
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }

    /// Every value of a tag, in order (the entries of a repeating group).
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &'a str> + '_ {
        self.0.iter().filter(move |(t, _)| *t == tag).map(|(_, v)| *v)
    }

    /// A non-empty value of a tag.
    pub fn non_empty(&self, tag: u32) -> Option<&'a str> {
        self.get(tag).filter(|v| !v.is_empty())
    }
}

/// A repeating group of an outgoing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutGroup {
    /// The NoXxx tag that counts the entries.
    pub count_tag: i32,
    /// The first tag of each entry.
    pub delimiter: i32,
    /// The order of the tags inside an entry (the data dictionary's order).
    pub order: &'static [i32],
    /// The entries.
    pub entries: Vec<Vec<(i32, String)>>,
}

/// An outgoing application message as plain data: the body as FIX text, built once by the
/// router (one buffer per message, not one string per field) and handed to QuickFIX as text
/// by the session's sender thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutMsg {
    /// MsgType (35).
    pub msg_type: &'static str,
    /// Body fields, `tag=value<SOH>` each, in the order set.
    body: String,
    /// Repeating groups, after the body fields.
    pub groups: Vec<OutGroup>,
}

impl OutMsg {
    /// An empty message of a type.
    pub fn new(msg_type: &'static str) -> OutMsg {
        OutMsg { msg_type, body: String::with_capacity(OUT_BODY_CAPACITY), groups: Vec::new() }
    }

    /// Adds a body field (each tag at most once). A SOH inside the value, which would end the
    /// field early, becomes a space.
    pub fn set(&mut self, tag: i32, value: impl std::fmt::Display) -> &mut OutMsg {
        use std::fmt::Write;
        let _ = write!(self.body, "{tag}=");
        let start = self.body.len();
        let _ = write!(self.body, "{value}");
        if self.body[start..].contains(SOH) {
            let clean = self.body[start..].replace(SOH, " ");
            self.body.truncate(start);
            self.body.push_str(&clean);
        }
        self.body.push(SOH);
        self
    }

    /// Sets a body field to another value (added if absent).
    pub fn replace(&mut self, tag: i32, value: impl std::fmt::Display) -> &mut OutMsg {
        let old = std::mem::take(&mut self.body);
        for (t, v) in fields_of(&old).filter(|(t, _)| *t != tag) {
            self.set(t, v);
        }
        self.set(tag, value)
    }

    /// The value of a body field.
    pub fn get(&self, tag: i32) -> Option<&str> {
        self.fields().find(|(t, _)| *t == tag).map(|(_, v)| v)
    }

    /// The body fields in the order set.
    pub fn fields(&self) -> impl Iterator<Item = (i32, &str)> {
        fields_of(&self.body)
    }

    /// The body fields as FIX text (`tag=value<SOH>` each).
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// Bytes reserved for a message's body at first (an ExecutionReport's body is about 200).
const OUT_BODY_CAPACITY: usize = 256;

/// The `tag=value` pieces of FIX text, in order; pieces that are not `number=value` (for the
/// tag type asked) are skipped.
fn fields_of<T: std::str::FromStr>(text: &str) -> impl Iterator<Item = (T, &str)> {
    text.split(SOH).filter_map(|piece| {
        let (tag, value) = piece.split_once('=')?;
        Some((tag.parse().ok()?, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_groups_stay_flat() {
        let f =
            Fields::parse("8=FIX.4.4\x019=5\x0135=V\x01146=2\x0155=A\x0155=B\x01junk\x01=x\x0110=000\x01");
        assert_eq!(f.get(35), Some("V"));
        assert_eq!(f.all(55).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(f.get(999), None);
    }

    #[test]
    fn outgoing_fields_are_text_in_the_order_set() {
        let mut m = OutMsg::new("8");
        m.set(37, 7u64).set(58, "a\x01b").set(11, String::from("c=d"));
        assert_eq!(m.body(), "37=7\x0158=a b\x0111=c=d\x01");
        assert_eq!(m.get(11), Some("c=d"));
        m.replace(37, "NONE").replace(790, "r");
        assert_eq!(m.fields().collect::<Vec<_>>(), [(58, "a b"), (11, "c=d"), (37, "NONE"), (790, "r")]);
    }

    #[test]
    fn checksum_is_the_byte_sum() {
        assert_eq!(
            checksum(b"8=FIX.4.4\x01"),
            (b"8=FIX.4.4\x01".iter().map(|b| *b as u32).sum::<u32>() % 256) as u8
        );
    }
}

//! A minimal FIX 4.4 initiator over plain TCP, for `cccx demo` and the FIX load generator.
//!
//! It speaks just enough of the session layer to trade against `cccx serve`'s acceptor: Logon
//! with Username (553) and Password (554), answers to TestRequest, Logout. It does not keep a
//! message store or answer ResendRequests: a participant's real FIX engine (QuickFIX or a
//! vendor's) does that; the interoperability tests use the PyPI `quickfix` package for it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cccx_gateway::fix::reports;
use cccx_gateway::fix::wire::checksum;

const SOH: u8 = 1;

/// The acceptor's CompID (TargetCompID of every message sent).
pub const TARGET_COMP_ID: &str = "CCCX";

/// A FIX message with header, body length and checksum around `body` (the fields after the
/// header, each ending in SOH).
pub fn frame(msg_type: &str, sender: &str, seq: u64, body: &str) -> Vec<u8> {
    frame_at(msg_type, sender, seq, body, &utc_timestamp())
}

/// [`frame`] with a given SendingTime (52), a FIX UTCTimestamp.
pub fn frame_at(msg_type: &str, sender: &str, seq: u64, body: &str, now: &str) -> Vec<u8> {
    let inner =
        format!("35={msg_type}\x0149={sender}\x0156={TARGET_COMP_ID}\x0134={seq}\x0152={now}\x01{body}");
    let mut out = format!("8=FIX.4.4\x019={}\x01{inner}", inner.len()).into_bytes();
    out.extend(format!("10={:03}\x01", checksum(&out)).into_bytes());
    out
}

/// The current UTC time as a FIX UTCTimestamp with milliseconds.
pub fn utc_timestamp() -> String {
    reports::utc_timestamp(reports::now_ns())
}

/// The value of `tag` in a raw message (the first occurrence after the BeginString).
pub fn field<'a>(msg: &'a [u8], tag: &str) -> Option<&'a str> {
    let needle = format!("\x01{tag}=");
    let at = msg.windows(needle.len()).position(|w| w == needle.as_bytes())? + needle.len();
    let end = msg[at..].iter().position(|b| *b == SOH)? + at;
    std::str::from_utf8(&msg[at..end]).ok()
}

/// Splits complete messages (ending in `10=xxx<SOH>`) off the front of `buf`.
pub fn take_messages(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = next_message_end(&buf[start..]) {
        out.push(buf[start..start + end].to_vec());
        start += end;
    }
    // One move of what is left, not one per message.
    buf.drain(..start);
    out
}

/// The length of the first complete message (ending in `10=xxx<SOH>`) at the front of `bytes`.
pub fn next_message_end(bytes: &[u8]) -> Option<usize> {
    let at = bytes.windows(4).position(|w| w == b"\x0110=")?;
    let end = bytes[at + 4..].iter().position(|b| *b == SOH)?;
    Some(at + 4 + end + 1)
}

/// A logged-on FIX session (blocking).
pub struct FixSession {
    stream: TcpStream,
    comp_id: String,
    seq: u64,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl FixSession {
    /// Connects and logs on with the participant's CompID and password; fails if the acceptor
    /// refuses or does not answer within `timeout`.
    pub fn logon(
        addr: SocketAddr,
        comp_id: &str,
        password: &str,
        timeout: Duration,
    ) -> anyhow::Result<FixSession> {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("FIX connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        let mut s = FixSession {
            stream,
            comp_id: comp_id.to_string(),
            seq: 1,
            buf: Vec::new(),
            pending: Default::default(),
        };
        s.send("A", &format!("98=0\x01108=30\x01553={comp_id}\x01554={password}\x01"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(m) = s.read_one(deadline)? else {
                bail!("{comp_id}: no logon answer within {timeout:?}")
            };
            match field(&m, "35") {
                Some("A") => return Ok(s),
                Some("5") | Some("3") => {
                    bail!("{comp_id}: logon refused: {}", field(&m, "58").unwrap_or("no reason given"))
                }
                _ => {}
            }
        }
    }

    /// Hands the logged-on connection over (to drive it without this type's blocking reads):
    /// the socket, the next sequence number to send, and the bytes received but not yet taken
    /// as messages (the messages already taken are dropped).
    pub fn into_parts(self) -> (TcpStream, u64, Vec<u8>) {
        (self.stream, self.seq, self.buf)
    }

    /// The session's SenderCompID.
    pub fn comp_id(&self) -> &str {
        &self.comp_id
    }

    /// Sends an application or session message with the next sequence number.
    pub fn send(&mut self, msg_type: &str, body: &str) -> anyhow::Result<()> {
        let msg = frame(msg_type, &self.comp_id, self.seq, body);
        self.seq += 1;
        self.stream.write_all(&msg).with_context(|| format!("{}: FIX send", self.comp_id))
    }

    /// Sends a limit NewOrderSingle, good for the day (time in force 0).
    pub fn new_limit_order(
        &mut self,
        cl_ord_id: &str,
        symbol: &str,
        buy: bool,
        qty: u64,
        price: i64,
    ) -> anyhow::Result<()> {
        let side = if buy { 1 } else { 2 };
        let body = format!(
            "11={cl_ord_id}\x0155={symbol}\x0154={side}\x0160={}\x0138={qty}\x0140=2\x0144={price}\x0159=0\x01",
            utc_timestamp()
        );
        self.send("D", &body)
    }

    /// The next application message received before `deadline` (heartbeats and test requests
    /// are handled here), or `None` at the deadline.
    pub fn recv(&mut self, deadline: Instant) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            let Some(m) = self.read_one(deadline)? else { return Ok(None) };
            match field(&m, "35") {
                Some("0") => {}
                Some("1") => {
                    let id = field(&m, "112").unwrap_or("").to_string();
                    self.send("0", &format!("112={id}\x01"))?;
                }
                _ => return Ok(Some(m)),
            }
        }
    }

    /// Logs out and waits (briefly) for the acceptor's Logout.
    pub fn logout(mut self) -> anyhow::Result<()> {
        self.send("5", "")?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(m) = self.read_one(deadline)? {
            if field(&m, "35") == Some("5") {
                break;
            }
        }
        Ok(())
    }

    fn read_one(&mut self, deadline: Instant) -> anyhow::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("{}: the acceptor closed the connection", self.comp_id),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.pending.extend(take_messages(&mut self.buf));
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e).with_context(|| format!("{}: FIX read", self.comp_id)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_and_checksum_and_split_back() {
        let mut bytes = frame("D", "ALUCO", 7, "11=X\x0155=CCC\x01");
        bytes.extend(frame("0", "ALUCO", 8, ""));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("8=FIX.4.4\x019="));
        let mut buf = bytes;
        buf.extend_from_slice(b"8=FIX.4.4\x019=5\x0135=");
        let msgs = take_messages(&mut buf);
        assert_eq!(msgs.len(), 2);
        assert_eq!(field(&msgs[0], "11"), Some("X"));
        assert_eq!(field(&msgs[1], "34"), Some("8"));
        // The checksum is the byte sum modulo 256 of everything before the 10= field.
        let m = &msgs[0];
        let at = m.windows(4).position(|w| w == b"\x0110=").unwrap() + 1;
        let sum: u32 = m[..at].iter().map(|b| u32::from(*b)).sum();
        assert_eq!(field(m, "10"), Some(format!("{:03}", sum % 256).as_str()));
        // The body length counts from after 9=...<SOH> to before 10=.
        let body_start = m.iter().enumerate().filter(|(_, b)| **b == SOH).nth(1).unwrap().0 + 1;
        assert_eq!(field(m, "9").unwrap().parse::<usize>().unwrap(), at - body_start);
        assert_eq!(buf, b"8=FIX.4.4\x019=5\x0135=");
    }
}

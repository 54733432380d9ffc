//! The audit trail: an append-only, hash-chained log of settlement and registry interactions.
//!
//! One JSON object per line:
//!
//! ```text
//! {"seq":1,"at":1767225600000000000,"kind":"obligation","data":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is BLAKE3 over `prev` (32 bytes), then `seq` and `at` (8 bytes each, little-endian),
//! then the length of `kind` (8 bytes) and its bytes, then the length of the compact JSON
//! encoding of `data` and its bytes. The first record's `prev` is 32 zero bytes. Editing,
//! removing, inserting or reordering any record breaks the chain from that record on, and
//! [`verify`] names the first record that does not check out (its line number and why). A line
//! must also be exactly the canonical encoding of its record (the bytes the writer wrote): other
//! spellings of the same values, extra fields or duplicate keys are refused. Anyone
//! can verify a copy: keep the last hash somewhere else (a report, a regulator's inbox) to
//! detect a rewrite of the whole file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When it happened (nanoseconds since the epoch).
    pub at: i64,
    /// What kind of interaction (`obligation`, `registry`, `funds`, ...).
    pub kind: String,
    /// Its details.
    pub data: Value,
    /// The previous record's hash (hex).
    pub prev: String,
    /// This record's hash (hex).
    pub hash: String,
}

/// Why the log could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The log.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// A record does not check out: the first one that does not.
    #[error("{path}:{line}: record {seq} is not intact: {reason}")]
    Broken {
        /// The log.
        path: PathBuf,
        /// Its 1-based line.
        line: u64,
        /// The sequence number expected there.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn chain(prev: &[u8; 32], seq: u64, at: i64, kind: &str, data: &Value) -> [u8; 32] {
    let data = data.to_string();
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&at.to_le_bytes());
    h.update(&(kind.len() as u64).to_le_bytes());
    h.update(kind.as_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data.as_bytes());
    *h.finalize().as_bytes()
}

/// An open log, positioned after its last record.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    head: [u8; 32],
    /// Set when a write failed: the file may end in a partial line, so nothing more is
    /// appended (reopening cuts the partial line off).
    poisoned: bool,
}

impl AuditLog {
    /// Opens (or creates) a log, verifying what is in it first: a damaged log is refused (a
    /// torn last line from a crash while appending is cut off).
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| AuditError::Io { path: path.clone(), error };
        if let Ok(bytes) = std::fs::read(&path) {
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete < bytes.len() {
                let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
                f.set_len(complete as u64).and_then(|()| f.sync_all()).map_err(io)?;
            }
        }
        let (seq, head) = if path.exists() { verify(&path)? } else { (0, [0u8; 32]) };
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        Ok(AuditLog { path, file, seq, head, poisoned: false })
    }

    /// Appends a record and flushes it to the operating system (durable with the next
    /// [`AuditLog::sync`]).
    pub fn append(&mut self, at: i64, kind: &str, data: Value) -> Result<&[u8; 32], AuditError> {
        let seq = self.seq + 1;
        let hash = chain(&self.head, seq, at, kind, &data);
        let record =
            AuditRecord { seq, at, kind: kind.to_string(), data, prev: hex(&self.head), hash: hex(&hash) };
        let io = |error| AuditError::Io { path: self.path.clone(), error };
        if self.poisoned {
            return Err(io(std::io::Error::other("an earlier write failed: reopen the log")));
        }
        let mut line = serde_json::to_string(&record).map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        // One write of the whole line: a failure leaves at most a torn last line.
        if let Err(error) = self.file.write_all(line.as_bytes()) {
            self.poisoned = true;
            return Err(io(error));
        }
        (self.seq, self.head) = (seq, hash);
        Ok(&self.head)
    }

    /// Forces the log to stable storage.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|error| AuditError::Io { path: self.path.clone(), error })
    }

    /// The number of records.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether it has no record.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// The last record's hash (all zeros when empty).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }
}

/// Checks a whole log; returns the number of records and the last hash, or names the first
/// record that is not intact. An unterminated last line (a crash while appending) is not a
/// record: [`AuditLog::open`] cuts it off.
pub fn verify(path: &Path) -> Result<(u64, [u8; 32]), AuditError> {
    let io = |error| AuditError::Io { path: path.to_path_buf(), error };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let mut head = [0u8; 32];
    let mut seq = 0u64;
    let mut line_no = 0u64;
    loop {
        let mut bytes = Vec::new();
        let read = reader.read_until(b'\n', &mut bytes).map_err(io)?;
        if read == 0 || bytes.last() != Some(&b'\n') {
            break;
        }
        bytes.pop();
        line_no += 1;
        let broken = |reason: String| AuditError::Broken {
            path: path.to_path_buf(),
            line: line_no,
            seq: seq + 1,
            reason,
        };
        let line = String::from_utf8(bytes).map_err(|_| broken("not UTF-8".into()))?;
        let record: AuditRecord =
            serde_json::from_str(&line).map_err(|e| broken(format!("not a record: {e}")))?;
        // Only the exact bytes the writer wrote: no other spelling of the same values.
        if serde_json::to_string(&record).ok().as_deref() != Some(line.as_str()) {
            return Err(broken("the line is not the canonical encoding of its record".into()));
        }
        if record.seq != seq + 1 {
            return Err(broken(format!("sequence {} where {} was expected", record.seq, seq + 1)));
        }
        if unhex(&record.prev) != Some(head) {
            return Err(broken("its previous hash is not the hash of the record before".into()));
        }
        let expected = chain(&head, record.seq, record.at, &record.kind, &record.data);
        if unhex(&record.hash) != Some(expected) {
            return Err(broken("its hash does not match its contents".into()));
        }
        (seq, head) = (record.seq, expected);
    }
    Ok((seq, head))
}

/// Lower-case hexadecimal of a hash.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 1..=n {
            log.append(i as i64 * 10, "obligation", json!({"trade": format!("T{i}"), "state": "confirmed"}))
                .unwrap();
        }
        log.sync().unwrap();
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    fn first_bad(path: &Path) -> Option<(u64, String)> {
        match verify(path) {
            Ok(_) => None,
            Err(AuditError::Broken { line, reason, .. }) => Some((line, reason)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_intact_log_verifies_and_reopens_where_it_ended() {
        let (_dir, path) = log_with(5);
        let (n, head) = verify(&path).unwrap();
        assert_eq!(n, 5);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!((log.len(), log.head()), (5, head));
        log.append(60, "registry", json!({"propose": "T6:p"})).unwrap();
        assert_eq!(verify(&path).unwrap().0, 6);
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_record() {
        let (_dir, path) = log_with(6);
        let good = lines(&path);
        // An edited field.
        let mut edited = good.clone();
        edited[2] = edited[2].replace("\"T3\"", "\"T9\"");
        write(&path, &edited);
        assert_eq!(first_bad(&path).map(|b| b.0), Some(3));
        // A removed record.
        let mut removed = good.clone();
        removed.remove(3);
        write(&path, &removed);
        assert_eq!(first_bad(&path).map(|b| b.0), Some(4));
        // Two records swapped.
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        write(&path, &swapped);
        assert_eq!(first_bad(&path).map(|b| b.0), Some(2));
        // A record rewritten with a recomputed hash of its own still breaks the next link.
        let mut forged: Vec<AuditRecord> = good.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        forged[4].data = json!({"trade": "T5", "state": "broken"});
        let prev = unhex(&forged[4].prev).unwrap();
        forged[4].hash = hex(&chain(&prev, 5, forged[4].at, "obligation", &forged[4].data));
        write(&path, &forged.iter().map(|r| serde_json::to_string(r).unwrap()).collect::<Vec<_>>());
        assert_eq!(first_bad(&path).map(|b| b.0), Some(6));
        // The same values spelled otherwise, an extra field, a duplicate key.
        for (from, to) in [
            ("\"T2\"", "\"\\u0054\\u0032\""),
            ("\"state\":\"confirmed\"", "\"state\":\"confirmed\",\"note\":\"paid in cash\""),
            ("\"state\":\"confirmed\"", "\"state\":\"broken\",\"state\":\"confirmed\""),
            ("\"kind\":", "\"note\":1,\"kind\":"),
        ] {
            let mut respelled = good.clone();
            respelled[1] = respelled[1].replacen(from, to, 1);
            assert_ne!(respelled[1], good[1], "{from}");
            write(&path, &respelled);
            assert_eq!(first_bad(&path).map(|b| b.0), Some(2), "{to}");
        }
        // Garbage.
        let mut garbage = good.clone();
        garbage[0] = "not json".into();
        write(&path, &garbage);
        assert_eq!(first_bad(&path).map(|b| b.0), Some(1));
        write(&path, &good);
        assert!(first_bad(&path).is_none());
    }

    #[test]
    fn a_torn_last_line_is_cut_on_open_and_damage_is_refused() {
        let (_dir, path) = log_with(3);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":4,\"at\":");
        std::fs::write(&path, &bytes).unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.len(), 3);
        let mut damaged = lines(&path);
        damaged[1] = damaged[1].replace("confirmed", "broken");
        write(&path, &damaged);
        assert!(matches!(AuditLog::open(&path), Err(AuditError::Broken { line: 2, .. })));
    }
}

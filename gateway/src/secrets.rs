//! Generated credentials: each participant's API key and FIX password, each operator's API key.
//!
//! There is no well-known default password: on first start (and for every participant or
//! operator added to the configuration later) a random secret is drawn from the operating
//! system (`getrandom`) and stored in `<data_dir>/secrets.json`, readable by its owner only.
//! The server prints where the file is; the exchange hands each participant its own entry.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Name of the secrets file in the data directory.
pub const SECRETS_FILE: &str = "secrets.json";

/// One participant's credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSecrets {
    /// The REST/WebSocket API key (`Authorization: Bearer <key>`).
    pub api_key: String,
    /// The FIX logon password (tag 554; the username, tag 553, is the CompID).
    pub fix_password: String,
}

/// Every credential of the exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// By participant id.
    pub participants: BTreeMap<u32, ParticipantSecrets>,
    /// Operator API keys by operator name.
    pub operators: BTreeMap<String, String>,
}

/// Why the secrets could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SecretsError {
    /// The secrets file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// A new random secret: 32 hexadecimal digits (128 bits) with a prefix saying what it is for.
pub fn generate(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}{}", cccx_engine::snapshot::hex(&bytes)))
}

impl Secrets {
    /// Loads `<data_dir>/secrets.json`, adds a secret for every participant and operator of
    /// `config` that has none, and writes the file back (owner-only) when something was added.
    /// Returns the secrets and whether any were generated.
    pub fn load_or_create(data_dir: &Path, config: &Config) -> Result<(Secrets, bool), SecretsError> {
        let path = data_dir.join(SECRETS_FILE);
        let err = |message: String| SecretsError { path: path.clone(), message };
        let mut secrets = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(format!("cannot parse: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets::default(),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let random = |prefix: &str| generate(prefix).map_err(|e| err(format!("no randomness: {e}")));
        let mut added = false;
        for p in &config.participants {
            if let std::collections::btree_map::Entry::Vacant(slot) = secrets.participants.entry(p.id) {
                slot.insert(ParticipantSecrets { api_key: random("pk_")?, fix_password: random("fx_")? });
                added = true;
            }
        }
        for o in &config.operators {
            if !secrets.operators.contains_key(&o.name) {
                secrets.operators.insert(o.name.clone(), random("ok_")?);
                added = true;
            }
        }
        if added {
            secrets.store(&path).map_err(|e| err(format!("cannot write: {e}")))?;
        }
        Ok((secrets, added))
    }

    fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The participant an API key belongs to.
    pub fn participant_by_key(&self, key: &str) -> Option<u32> {
        self.participants.iter().find(|(_, s)| constant_time_eq(&s.api_key, key)).map(|(id, _)| *id)
    }

    /// The operator an API key belongs to.
    pub fn operator_by_key(&self, key: &str) -> Option<&str> {
        self.operators.iter().find(|(_, k)| constant_time_eq(k, key)).map(|(name, _)| name.as_str())
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded();
        let (first, added) = Secrets::load_or_create(dir.path(), &config).unwrap();
        assert!(added);
        assert_eq!(first.participants.len(), 4);
        assert_ne!(first.participants[&1].api_key, first.participants[&2].api_key);
        assert!(
            first.participants[&1].api_key.starts_with("pk_") && first.participants[&1].api_key.len() == 35
        );
        let (second, added) = Secrets::load_or_create(dir.path(), &config).unwrap();
        assert!(!added);
        assert_eq!(first, second);
        assert_eq!(second.participant_by_key(&first.participants[&3].api_key), Some(3));
        assert_eq!(second.participant_by_key("pk_nope"), None);
        assert_eq!(second.operator_by_key(&first.operators["ops"]), Some("ops"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRETS_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
    }
}

//! Is this the server we pinned? The server's host key against
//! `SFTP_HOST_KEY` (one key line or a `SHA256:` fingerprint) or the lines
//! of a known_hosts file (`SFTP_KNOWN_HOSTS`) naming this host and port,
//! hashed host names and `@revoked` markers included. There is no
//! unpinned mode: a server whose key is not pinned is never spoken to.

use std::path::Path;

use hmac::{Hmac, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use crate::config::HostKeyPin;

/// The keys a pin accepts, read once per connection (a known_hosts file
/// may change between connections, as `ssh` would see it).
#[derive(Debug)]
pub(super) enum Accepted {
    /// These keys, and no `@revoked` one.
    Keys {
        keys: Vec<PublicKey>,
        revoked: Vec<PublicKey>,
        /// Where they come from, for messages.
        source: String,
    },
    /// The key whose SHA-256 fingerprint this is.
    Fingerprint(String),
}

impl Accepted {
    /// Read `pin` for `host:port`.
    pub(super) fn read(pin: &HostKeyPin, host: &str, port: u16) -> Result<Self, String> {
        match pin {
            HostKeyPin::Fingerprint(f) => Ok(Accepted::Fingerprint(f.clone())),
            HostKeyPin::Key(line) => {
                let key = PublicKey::from_openssh(line)
                    .map_err(|e| format!("SFTP_HOST_KEY is not a public key line ({e}): copy the line `ssh-keyscan` prints, without the host name, or give the SHA256: fingerprint"))?;
                Ok(Accepted::Keys {
                    keys: vec![key],
                    revoked: Vec::new(),
                    source: "SFTP_HOST_KEY".into(),
                })
            }
            HostKeyPin::KnownHosts(path) => known_hosts(path, host, port),
        }
    }

    /// The host key algorithms to ask the server for, most wanted first:
    /// the pinned keys' own, so that a server holding several keys
    /// presents the one we know. `None` leaves the default order (a
    /// fingerprint does not say which algorithm it belongs to).
    pub(super) fn algorithms(&self) -> Option<Vec<Algorithm>> {
        let Accepted::Keys { keys, .. } = self else {
            return None;
        };
        // No key for this host (a known_hosts file without its line): an
        // empty list would end the handshake with "no common algorithm"
        // before `check` can say which key the server has and what to do.
        if keys.is_empty() {
            return None;
        }
        let mut v = Vec::new();
        for k in keys {
            let algs = match k.algorithm() {
                Algorithm::Rsa { .. } => vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                ],
                other => vec![other],
            };
            for a in algs {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        Some(v)
    }

    /// `Ok` when `key` is pinned; otherwise why not, as one line that
    /// says what to do.
    pub(super) fn check(&self, key: &PublicKey, host: &str, port: u16) -> Result<(), String> {
        let seen = key.fingerprint(HashAlg::Sha256).to_string();
        let alg = key.algorithm().as_str().to_owned();
        let warn = format!("the server at {host}:{port} presented the {alg} key {seen}");
        let mitm = "this may be a man in the middle: do not connect until the server's owner confirms its key; if the key was changed on purpose, pin the new one";
        match self {
            Accepted::Fingerprint(want) if *want == seen => Ok(()),
            Accepted::Fingerprint(want) => Err(format!(
                "{warn}, not the pinned SFTP_HOST_KEY {want}: {mitm} (`ssh-keyscan -p {port} {host} | ssh-keygen -lf -` lists its keys)"
            )),
            Accepted::Keys {
                keys,
                revoked,
                source,
            } => {
                let same = |k: &PublicKey| k.key_data() == key.key_data();
                if revoked.iter().any(same) {
                    return Err(format!("{warn}, marked @revoked in {source}: {mitm}"));
                }
                if keys.iter().any(same) {
                    return Ok(());
                }
                if keys.is_empty() {
                    return Err(format!(
                        "{warn}; {source} has no key for [{host}]:{port} or {host}: add its line (`ssh-keyscan -p {port} {host} >> FILE`, after checking the fingerprint with the server's owner)"
                    ));
                }
                Err(format!("{warn}, not the one pinned in {source}: {mitm}"))
            }
        }
    }
}

/// The keys of `path` for `host:port`: lines whose host patterns name it
/// as `[host]:port` (or plain `host` on port 22), in clear or hashed
/// (`|1|salt|hash`); `@cert-authority` lines are not used.
fn known_hosts(path: &Path, host: &str, port: u16) -> Result<Accepted, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read SFTP_KNOWN_HOSTS {}: {e}: mount the file, or pin the key with SFTP_HOST_KEY",
            path.display()
        )
    })?;
    let wanted = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    let (mut keys, mut revoked) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = first.strip_prefix('@').map(str::to_owned);
        if marker.is_some() {
            first = fields.next().unwrap_or_default();
        }
        if marker.as_deref() == Some("cert-authority") || !host_matches(first, &wanted) {
            continue;
        }
        let (Some(alg), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = PublicKey::from_openssh(&format!("{alg} {b64}")) else {
            continue;
        };
        if marker.as_deref() == Some("revoked") {
            revoked.push(key);
        } else {
            keys.push(key);
        }
    }
    Ok(Accepted::Keys {
        keys,
        revoked,
        source: format!("SFTP_KNOWN_HOSTS ({})", path.display()),
    })
}

/// Whether a known_hosts host field (comma-separated patterns, `!`
/// negations, hashed entries) names `wanted`. Wildcards are matched too.
fn host_matches(patterns: &str, wanted: &str) -> bool {
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(negated) = p.strip_prefix('!') {
            if pattern_matches(negated, wanted) {
                return false;
            }
        } else if pattern_matches(p, wanted) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(pattern: &str, wanted: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("|1|") {
        let mut parts = rest.split('|');
        let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
            return false;
        };
        let (Some(salt), Some(hash)) = (crate::base64::decode(salt), crate::base64::decode(hash))
        else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(wanted.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    glob(pattern.as_bytes(), wanted.as_bytes())
}

/// `*` and `?` as OpenSSH host patterns have them.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn a_pinned_key_line_accepts_that_key_only() {
        let a = Accepted::read(&HostKeyPin::Key(ED.into()), "h", 22).unwrap();
        assert!(a.check(&key(ED), "h", 22).is_ok());
        let e = a.check(&key(ED2), "h", 22).unwrap_err();
        assert!(e.contains("man in the middle"), "{e}");
        assert_eq!(a.algorithms(), Some(vec![Algorithm::Ed25519]));
    }

    #[test]
    fn a_fingerprint_pin_compares_sha256() {
        let fp = key(ED).fingerprint(HashAlg::Sha256).to_string();
        let a = Accepted::read(&HostKeyPin::Fingerprint(fp.clone()), "h", 22).unwrap();
        assert!(a.check(&key(ED), "h", 22).is_ok());
        let e = a.check(&key(ED2), "h", 2222).unwrap_err();
        assert!(
            e.contains(&fp) && e.contains("ssh-keyscan -p 2222 h"),
            "{e}"
        );
    }

    #[test]
    fn known_hosts_lines_for_the_port_hashed_or_not() {
        let (_d, p) = file(&format!(
            "# comment\n[other]:2222 {ED2}\n[backup.example]:2222,10.0.0.5 {ED}\n"
        ));
        let a = known_hosts(&p, "backup.example", 2222).unwrap();
        assert!(a.check(&key(ED), "backup.example", 2222).is_ok());
        assert!(a.check(&key(ED2), "backup.example", 2222).is_err());
        // Port 22 is written without brackets; another port is another host.
        let a = known_hosts(&p, "backup.example", 22).unwrap();
        let e = a.check(&key(ED), "backup.example", 22).unwrap_err();
        assert!(e.contains("has no key for"), "{e}");
        // No key to ask for: the server's default, so that `check` sees
        // its key and says what to do (not a handshake failure).
        assert_eq!(a.algorithms(), None);

        // `ssh-keygen -H` output for [127.0.0.1]:2222 with a fixed salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let b64 = crate::base64::encode;
        let (_d, p) = file(&format!("|1|{}|{} {ED}\n", b64(&salt), b64(&hash)));
        let a = known_hosts(&p, "127.0.0.1", 2222).unwrap();
        assert!(a.check(&key(ED), "127.0.0.1", 2222).is_ok());
        let a = known_hosts(&p, "127.0.0.1", 2223).unwrap();
        assert!(a.check(&key(ED), "127.0.0.1", 2223).is_err());
    }

    #[test]
    fn revoked_keys_and_negations_win() {
        let (_d, p) = file(&format!("*.example {ED}\n@revoked * {ED}\n"));
        let e = known_hosts(&p, "b.example", 22)
            .unwrap()
            .check(&key(ED), "b.example", 22)
            .unwrap_err();
        assert!(e.contains("@revoked"), "{e}");
        assert!(host_matches("*.example,!bad.example", "b.example"));
        assert!(!host_matches("*.example,!bad.example", "bad.example"));
    }

    #[test]
    fn a_missing_known_hosts_file_says_what_to_do() {
        let e = known_hosts(Path::new("/nonexistent/known_hosts"), "h", 22).unwrap_err();
        assert!(
            e.contains("SFTP_KNOWN_HOSTS") && e.contains("SFTP_HOST_KEY"),
            "{e}"
        );
    }
}

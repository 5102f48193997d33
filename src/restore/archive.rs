//! Restoring a file archive (configuration, uploads): open the stored
//! archive, check it whole (stored SHA-256, decryption tags,
//! decompression, tar structure, each file against the manifest, every
//! path) before anything is written, then extract it in a second pass that
//! checks everything again. The tar format and its safe extraction are
//! `format::archive`'s; locating and fetching, [`super::open`]'s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::BufReader;

use super::open::{self, Source};
use super::RestoreError;
use crate::format::archive::{read_tar, ArchiveError, ExtractReport};
use crate::format::codec::Compression;
use crate::progress::Reporter;
use crate::secret::Secret;

/// Read the whole archive and check everything, writing nothing.
pub async fn verify(
    source: &Source,
    passphrase: Option<&Secret>,
) -> Result<ExtractReport, RestoreError> {
    pass(source, passphrase, None).await
}

/// Check the whole archive, then extract it into `dest` (created when
/// missing; when it holds anything, only with `force`).
pub async fn extract(
    source: &Source,
    passphrase: Option<&Secret>,
    dest: &Path,
    force: bool,
) -> Result<ExtractReport, RestoreError> {
    check_target(dest, force)?;
    verify(source, passphrase).await?;
    extract_verified(source, passphrase, dest).await
}

/// Refuse a `dest` that holds anything, unless `force`.
pub fn check_target(dest: &Path, force: bool) -> Result<(), ArchiveError> {
    match fs::read_dir(dest) {
        Ok(mut it) => {
            if it.next().is_some() && !force {
                return Err(ArchiveError::NotEmpty(dest.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ArchiveError::Write {
            path: dest.to_owned(),
            source,
        }),
    }
}

/// Extract into `dest`. Call only after [`verify`] succeeded on the same
/// source (and [`check_target`] on `dest`): every check runs again, but
/// what was written before a failure stays.
pub async fn extract_verified(
    source: &Source,
    passphrase: Option<&Secret>,
    dest: &Path,
) -> Result<ExtractReport, RestoreError> {
    fs::create_dir_all(dest).map_err(|source| ArchiveError::Write {
        path: dest.to_owned(),
        source,
    })?;
    pass(source, passphrase, Some(dest.to_owned())).await
}

async fn pass(
    source: &Source,
    passphrase: Option<&Secret>,
    dest: Option<PathBuf>,
) -> Result<ExtractReport, RestoreError> {
    let (plain, counter, hash) = open::open_plain(source, passphrase).await?;
    let decoded = Compression::from_file_name(&source.name)
        .decoder(BufReader::with_capacity(256 * 1024, plain));
    let _progress = Reporter::start(
        if dest.is_some() {
            "extracting"
        } else {
            "verifying"
        },
        counter.clone(),
        source.size,
        Duration::from_secs(5),
    );
    let bridge = tokio_util::io::SyncIoBridge::new(decoded);
    let name = source.name.clone();
    let manifest = source.manifest.clone();
    let mut report = tokio::task::spawn_blocking(move || {
        read_tar(bridge, &name, manifest.as_ref(), dest.as_deref())
    })
    .await
    .unwrap_or_else(|e| Err(ArchiveError::Thread(e.to_string())))?;
    open::check_manifest(source, counter.get(), &hash.hex())?;
    report.manifest_checked = source.manifest.is_some();
    Ok(report)
}

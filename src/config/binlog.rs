//! What the configuration says about the binlog archive (`BINLOG_*`).
//! The types sit here, below the configuration and the archive that
//! reads them.

use std::time::Duration;

/// `BINLOG_ARCHIVE`: whether the daemon archives the server's binlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Archive when the server has binary logging on and the user may
    /// replicate; otherwise one warning at start saying how to enable it.
    #[default]
    Auto,
    /// Archive; missing prerequisites stop the daemon at start (exit 3).
    On,
    /// Never archive.
    Off,
}

impl std::str::FromStr for ArchiveMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ArchiveMode::Auto),
            "on" | "true" | "yes" | "1" => Ok(ArchiveMode::On),
            "off" | "false" | "no" | "0" => Ok(ArchiveMode::Off),
            other => Err(format!("{other:?}: use auto, on or off")),
        }
    }
}

impl std::fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveMode::Auto => "auto",
            ArchiveMode::On => "on",
            ArchiveMode::Off => "off",
        })
    }
}

/// The default replica server id: high, so that it does not clash with
/// the small ids real replicas are usually given.
pub const DEFAULT_SERVER_ID: u32 = 4_242_424_242;

/// The binlog archive's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogSettings {
    /// `BINLOG_ARCHIVE` (default auto).
    pub mode: ArchiveMode,
    /// Our server id as a replica (`BINLOG_SERVER_ID`, default 4242424242);
    /// it must differ from the server's and from every other replica's.
    pub server_id: u32,
    /// A segment is closed and copied off-site at most this long after its
    /// first event (`BINLOG_UPLOAD_SECONDS`, default 60).
    pub upload_after: Duration,
    /// ... or when it reaches this size (`BINLOG_SEGMENT_MB`, default 64).
    pub segment_bytes: u64,
}

impl Default for BinlogSettings {
    fn default() -> Self {
        BinlogSettings {
            mode: ArchiveMode::Auto,
            server_id: DEFAULT_SERVER_ID,
            upload_after: Duration::from_secs(60),
            segment_bytes: 64 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("auto", Ok(ArchiveMode::Auto))]
    #[case("ON", Ok(ArchiveMode::On))]
    #[case("off", Ok(ArchiveMode::Off))]
    #[case("sometimes", Err(()))]
    fn modes_parse(#[case] s: &str, #[case] want: Result<ArchiveMode, ()>) {
        assert_eq!(s.parse::<ArchiveMode>().map_err(|_| ()), want);
    }
}

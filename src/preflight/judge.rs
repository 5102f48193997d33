//! The judges: facts in, a [`Report`] of findings out, with no I/O but
//! the `BACKUP_DIR` probe, so every rule is unit tested.

use std::path::Path;

use super::*;
use crate::db;
use crate::progress::human_bytes;
use crate::restore::definer::Definer;
use crate::restore::drill::SCRATCH_PREFIX;

/// What a backup preflight needs besides the facts.
#[derive(Debug, Clone)]
pub struct BackupContext {
    /// The database backed up.
    pub database: String,
    /// Free space on `BACKUP_DIR` against the last backup, as
    /// [`health::space_for_backup`] judged it.
    pub space: Result<u64, String>,
    /// Whether `space` failed so that no backup can start (the directory is
    /// unusable, or below `HEALTH_MIN_FREE_MB`: fatal) or is only short (warning).
    pub space_unusable: bool,
    /// Whether the restore drill is scheduled (`DRILL_SCHEDULE` is not `off`).
    pub drill: bool,
}

/// How many objects of each kind a backup holds (from its manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Objects {
    /// Views.
    pub views: usize,
    /// Stored procedures.
    pub procedures: usize,
    /// Stored functions.
    pub functions: usize,
    /// Triggers.
    pub triggers: usize,
    /// Events.
    pub events: usize,
    /// System-versioned tables whose history (or ROW START) the backup
    /// holds, which a restore inserts under `system_versioning_insert_history`.
    pub history_tables: usize,
}

impl Objects {
    /// Of the manifest of a database backup.
    pub fn of(m: &crate::format::manifest::Manifest) -> Objects {
        let functions = m
            .routines
            .iter()
            .filter(|r| r.starts_with("FUNCTION "))
            .count();
        Objects {
            views: m.views.len(),
            procedures: m.routines.len() - functions,
            functions,
            triggers: m.triggers.len(),
            events: m.events.len(),
            history_tables: m
                .tables
                .iter()
                .filter(|t| t.history_rows.is_some() && t.rows + t.history_rows.unwrap_or(0) > 0)
                .count(),
        }
    }

    fn total(&self) -> usize {
        self.views + self.procedures + self.functions + self.triggers + self.events
    }
}

/// What a restore preflight needs besides the facts.
#[derive(Debug, Clone)]
pub struct RestoreContext {
    /// The database restored into.
    pub database: String,
    /// `RESTORE_DEFINER`.
    pub definer: Definer,
    /// Objects the manifest lists; `None` without a manifest (a
    /// `mariadb-dump` file ...).
    pub objects: Option<Objects>,
    /// Size of the backup file, when known.
    pub backup_bytes: Option<u64>,
    /// The largest value in the backup, when its manifest records it.
    pub largest_value: Option<u64>,
    /// Whether a safety snapshot will be taken.
    pub snapshot: bool,
    /// Free bytes on `BACKUP_DIR`.
    pub free: Result<u64, String>,
}

/// `'user'@'host'` from `user@host`, for GRANT lines.
pub(super) fn account(current_user: &str) -> String {
    match current_user.rsplit_once('@') {
        Some((u, h)) => format!("'{u}'@'{h}'"),
        None => format!("'{current_user}'"),
    }
}

/// When privileges are missing and roles are granted: a role's privileges
/// count only when it is the default role (selmai-backup never runs `SET
/// ROLE`, and `SHOW GRANTS` lists only the active role's privileges).
pub(super) fn inactive_roles(g: &Grants, current_user: &str) -> Option<String> {
    let role = g.roles.first()?;
    Some(format!(
        "{current_user} has the roles {}: if the missing privileges are granted to one of them, make it the default role (SET DEFAULT ROLE `{role}` FOR {}), since selmai-backup does not SET ROLE",
        g.roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
        account(current_user)
    ))
}

/// Judge the facts for a backup of `ctx.database`.
pub fn judge_backup(facts: &Facts, ctx: &BackupContext) -> Report {
    let mut r = Report::default();
    r.findings.push(version(&facts.version));
    let g = Grants::parse(&facts.grants);
    let db = &ctx.database;
    let who = account(&facts.current_user);
    let grant = |p: &str| format!("GRANT {p} ON {}.* TO {who}", db::ident(db));
    let mut push = |s: Severity, m: String| r.findings.push(Finding::new(s, Area::Privileges, m));
    if !facts.database_exists {
        push(
            Severity::Warning,
            format!("database `{db}` does not exist (or is invisible to {}): backups fail until it does; check DB_NAME", facts.current_user),
        );
    }
    let mut missing = false;
    if !g.on_database(db, "SELECT") {
        missing = true;
        let some = g.tables_with(db, "SELECT");
        if some.is_empty() {
            push(
                Severity::Fatal,
                format!(
                    "{} has no SELECT on `{db}`: nothing can be backed up; {}",
                    facts.current_user,
                    grant("SELECT, SHOW VIEW, TRIGGER, EVENT")
                ),
            );
        } else {
            push(
                Severity::Warning,
                format!("{} has SELECT only on some tables of `{db}` ({}): the others are invisible to it and left out of backups without an error; {}", facts.current_user, some.join(", "), grant("SELECT")),
            );
        }
    }
    if !g.on_database(db, "SHOW VIEW") {
        missing = true;
        if facts.views > 0 {
            push(
                Severity::Fatal,
                format!("missing SHOW VIEW on `{db}`, which has {} views: SHOW CREATE VIEW is refused, so every backup fails; {}", facts.views, grant("SHOW VIEW")),
            );
        } else {
            push(
                Severity::Warning,
                format!("missing SHOW VIEW on `{db}`: once the database has a view, every backup fails; {}", grant("SHOW VIEW")),
            );
        }
    }
    if !g.on_database(db, "TRIGGER") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing TRIGGER on `{db}`: triggers are invisible to this user and left out of backups without an error; {}", grant("TRIGGER")),
        );
    }
    if !g.on_database(db, "EVENT") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing EVENT on `{db}`: events are invisible to this user and left out of backups without an error; {}", grant("EVENT")),
        );
    }
    let reads_routines =
        g.on_table("mysql", "proc", "SELECT") || g.on_database(db, "SHOW CREATE ROUTINE");
    if !reads_routines {
        missing = true;
        push(
            Severity::Warning,
            format!("missing SELECT on mysql.proc: stored routines defined by another account are left out of backups (or fail them when this user may EXECUTE them); GRANT SELECT ON `mysql`.`proc` TO {who}"),
        );
    }
    if !missing {
        push(
            Severity::Ok,
            format!(
                "{} may read every table, view, routine, trigger and event of `{db}`",
                facts.current_user
            ),
        );
    } else if let Some(note) = inactive_roles(&g, &facts.current_user) {
        push(Severity::Warning, note);
    }
    if ctx.drill {
        r.findings.push(drill_privileges(&g, &facts.current_user));
    }
    if !facts.self_qualified_views.is_empty() {
        r.findings.push(Finding::new(
            Severity::Warning,
            Area::Objects,
            format!("views {} name database `{db}` in their definitions (MariaDB shows them so when their DEFINER account no longer exists): they restore only into a database named `{db}`, and restore drills fail on them (ERROR 1054); create the DEFINER account again, or recreate the views with an existing DEFINER", facts.self_qualified_views.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")),
        ));
    }
    r.findings.extend(packet_for_backup(facts));
    r.findings.push(match &ctx.space {
        Ok(free) => Finding::new(
            Severity::Ok,
            Area::Space,
            format!("{} free on BACKUP_DIR", human_bytes(*free)),
        ),
        Err(e) if ctx.space_unusable => Finding::new(Severity::Fatal, Area::Space, e.clone()),
        Err(e) => Finding::new(Severity::Warning, Area::Space, e.clone()),
    });
    r
}

/// What a restore of one of our backups runs into its database, and what
/// the drill adds (reading the tables back, dropping the database): the
/// drill's GRANT on its scratch databases.
pub(super) const DRILL_PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "CREATE",
    "DROP",
    "ALTER",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "TRIGGER",
    "EVENT",
];

/// The grant pattern matching every scratch database of the drill.
pub(super) fn drill_pattern() -> String {
    format!("{}%", SCRATCH_PREFIX.replace('_', "\\_"))
}

/// Can the restore drill create, fill, read and drop its scratch database?
pub(super) fn drill_privileges(g: &Grants, current_user: &str) -> Finding {
    // A name of the drill's form: grants on a pattern (`selmai\_drill\_%`)
    // or on `*.*` match it, a grant on `DB_NAME` alone does not.
    let sample = format!("{SCRATCH_PREFIX}20250101000000_00000000");
    let pattern = db::ident(&drill_pattern());
    let lacking: Vec<&str> = DRILL_PRIVILEGES
        .iter()
        .copied()
        .filter(|p| !g.on_database(&sample, p))
        .collect();
    if lacking.is_empty() {
        return Finding::new(
            Severity::Ok,
            Area::Privileges,
            format!("{current_user} may run the restore drill in scratch databases {pattern}"),
        );
    }
    Finding::new(
        Severity::Warning,
        Area::Privileges,
        format!(
            "{current_user} lacks {} on the restore drill's scratch databases {pattern}: backups work, but the drill (DRILL_SCHEDULE) fails at every run (ERROR 1044); GRANT {} ON {pattern}.* TO {}, or set DRILL_SCHEDULE=off",
            lacking.join(", "),
            DRILL_PRIVILEGES.join(", "),
            account(current_user)
        ),
    )
}

/// Create and remove a probe file in `dir`: permission bits alone do not
/// say whether this process may write there (ACLs, read-only mounts, user
/// namespaces).
pub fn probe_writable(dir: &Path) -> Result<(), String> {
    let mut random = [0u8; 4];
    // Two containers may both run as PID 1: the random part keeps their
    // probes apart; without randomness the name is still unlikely to be taken.
    let _ = getrandom::fill(&mut random);
    let probe = dir.join(format!(".selmai-backup-probe-{}", hex::encode(random)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))
}

/// This process's user and group (the owner of `/proc/self`), for the
/// `chown` a message suggests.
pub fn process_owner() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .ok()
        .map(|m| (m.uid(), m.gid()))
}

/// Judge the probe of `dir` ([`probe_writable`]) run as `owner` (uid, gid).
pub fn judge_writable(
    dir: &Path,
    probe: &Result<(), String>,
    owner: Option<(u32, u32)>,
) -> Finding {
    match probe {
        Ok(()) => Finding::new(
            Severity::Ok,
            Area::Space,
            format!("BACKUP_DIR {} is writable", dir.display()),
        ),
        Err(e) => {
            let (who, chown) = match owner {
                Some((uid, gid)) => (format!("uid {uid}"), format!("{uid}:{gid}")),
                None => ("this user".to_owned(), "10001:10001".to_owned()),
            };
            Finding::new(
                Severity::Fatal,
                Area::Space,
                format!(
                    "BACKUP_DIR {} is not writable by {who} ({e}): nothing can be backed up or restored; give the directory mounted there to {who} on the host, e.g. mkdir -p backups && sudo chown {chown} backups for the ./backups of docker-compose.backup.yml (Docker creates a missing one as root's)",
                    dir.display()
                ),
            )
        }
    }
}

/// Judge the facts for a restore into `ctx.database`.
pub fn judge_restore(facts: &Facts, ctx: &RestoreContext) -> Report {
    let mut r = Report::default();
    r.findings.push(version(&facts.version));
    let g = Grants::parse(&facts.grants);
    let db = &ctx.database;
    let who = account(&facts.current_user);
    let grant = |p: &str| format!("GRANT {p} ON {}.* TO {who}", db::ident(db));
    let mut push = |s: Severity, m: String| r.findings.push(Finding::new(s, Area::Privileges, m));
    let lacking = |privs: &[&str]| -> Vec<String> {
        privs
            .iter()
            .filter(|p| !g.on_database(db, p))
            .map(|p| p.to_string())
            .collect()
    };
    let mut missing = false;
    let basic = lacking(&["CREATE", "DROP", "INSERT"]);
    if !basic.is_empty() {
        missing = true;
        push(
            Severity::Fatal,
            format!("{} lacks {} on `{db}`: tables cannot be replaced; {}", facts.current_user, basic.join(", "), grant("CREATE, DROP, INSERT, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT, SELECT")),
        );
    }
    // (kind, count in the manifest, privileges its statements need)
    let o = ctx.objects;
    let (views, routines, triggers, events) = (
        o.map(|o| o.views),
        o.map(|o| o.procedures + o.functions),
        o.map(|o| o.triggers),
        o.map(|o| o.events),
    );
    for (kind, count, privs) in [
        ("views", views, &["CREATE VIEW", "SELECT"][..]),
        (
            "routines",
            routines,
            &["CREATE ROUTINE", "ALTER ROUTINE"][..],
        ),
        ("triggers", triggers, &["TRIGGER"][..]),
        ("events", events, &["EVENT"][..]),
    ] {
        let lack = lacking(privs);
        if lack.is_empty() || count == Some(0) {
            continue;
        }
        missing = true;
        match count {
            Some(n) => push(
                Severity::Fatal,
                format!("missing {} on `{db}`, and the backup has {n} {kind}: the restore would stop half way at the first one; {}", lack.join(", "), grant(&lack.join(", "))),
            ),
            None => push(
                Severity::Warning,
                format!("missing {} on `{db}`: if the file has {kind}, the restore stops half way at the first one; {}", lack.join(", "), grant(&lack.join(", "))),
            ),
        }
    }
    // With binary logging, the server refuses triggers and stored functions
    // from users without SUPER unless it trusts function creators (1419).
    let binlogged = o.map(|o| o.triggers + o.functions);
    if facts.log_bin && !facts.trust_function_creators && !g.global("SUPER") && binlogged != Some(0)
    {
        missing = true;
        let fix = "SET GLOBAL log_bin_trust_function_creators = 1 on the server (and log_bin_trust_function_creators=1 in its configuration), or restore as a user with SUPER";
        match binlogged {
            Some(n) => push(
                Severity::Fatal,
                format!("binary logging is on and {} lacks SUPER: the server refuses the backup's {n} triggers and stored functions (ERROR 1419), so the restore would stop half way; {fix}", facts.current_user),
            ),
            None => push(
                Severity::Warning,
                format!("binary logging is on and {} lacks SUPER: if the file has triggers or stored functions, the server refuses them (ERROR 1419) and the restore stops half way; {fix}", facts.current_user),
            ),
        }
    }
    if o.is_none() && !g.on_database(db, "ALTER") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing ALTER on `{db}`: the `ALTER TABLE ... DISABLE KEYS` of mariadb-dump files fails; {}", grant("ALTER")),
        );
    }
    let programs = o.is_none_or(|o| o.total() > 0);
    if ctx.definer == Definer::Keep && programs && !g.global("SUPER") && !g.global("SET USER") {
        missing = true;
        push(
            Severity::Warning,
            format!("{} has neither SET USER nor SUPER: with RESTORE_DEFINER=keep, a view, routine, trigger or event whose DEFINER is another account fails to restore (ERROR 1227); set RESTORE_DEFINER=rewrite to make them this user's", facts.current_user),
        );
    }
    if let Some(n) = o.map(|o| o.history_tables).filter(|n| *n > 0) {
        match history_needs(facts, &g, n) {
            Some((severity, message)) => {
                missing |= severity == Severity::Fatal;
                push(severity, message);
            }
            None => push(
                Severity::Ok,
                format!("the backup holds the history of {n} system-versioned tables: this server restores it (system_versioning_insert_history, secure_timestamp={})", facts.secure_timestamp),
            ),
        }
    }
    if !missing {
        push(
            Severity::Ok,
            format!(
                "{} may create every object of the backup in `{db}`",
                facts.current_user
            ),
        );
    } else if let Some(note) = inactive_roles(&g, &facts.current_user) {
        push(Severity::Warning, note);
    }
    let packet = facts.max_allowed_packet;
    r.findings.push(match ctx.largest_value {
        Some(l) if l > packet => Finding::new(
            Severity::Fatal,
            Area::Packet,
            format!("the backup's largest value is {}, more than this server's max_allowed_packet ({}): it would be assembled in a user variable the server caps at max_allowed_packet and restore as NULL; raise max_allowed_packet on the server to more than {} and restore again", human_bytes(l), human_bytes(packet), human_bytes(l)),
        ),
        _ if packet < STATEMENT_NEED => Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("max_allowed_packet is only {}: statements of up to about {} fail, and larger values restore as NULL; raise it on the server (--max-allowed-packet=64M)", human_bytes(packet), human_bytes(STATEMENT_NEED)),
        ),
        Some(l) => Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}, the backup's largest value is {}", human_bytes(packet), human_bytes(l)),
        ),
        None => Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}: values up to that size restore", human_bytes(packet)),
        ),
    });
    r.findings.push(restore_space(facts, ctx));
    r
}

/// What stops restoring the history of `n` system-versioned tables (their
/// rows go in with their ROW START and ROW END under
/// `system_versioning_insert_history`, which `secure_timestamp` governs).
pub(super) fn history_needs(facts: &Facts, g: &Grants, n: usize) -> Option<(Severity, String)> {
    let lost = format!("the backup holds the history of {n} system-versioned tables (every row with its ROW START and ROW END)");
    if !facts.insert_history {
        return Some((
            Severity::Fatal,
            format!("{lost}, and this server ({}) cannot insert history rows (system_versioning_insert_history is MariaDB 10.11 and later): the restore would stop at the first one; restore into MariaDB 10.11 or later", facts.version),
        ));
    }
    let privileged = g.global("SUPER") || g.global("BINLOG REPLAY");
    match facts.secure_timestamp.to_ascii_uppercase().as_str() {
        "YES" => Some((
            Severity::Fatal,
            format!("{lost}, and secure_timestamp=YES on this server forbids setting them: the restore would stop at the first one; start the server with secure_timestamp=NO (or SUPER, and restore as a user with SUPER or BINLOG REPLAY)"),
        )),
        v @ ("SUPER" | "REPLICATION") if !privileged => Some((
            Severity::Fatal,
            format!("{lost}, and with secure_timestamp={v} only a user with SUPER or BINLOG REPLAY may set them: the restore would stop at the first one; GRANT BINLOG REPLAY ON *.* TO {} (or start the server with secure_timestamp=NO)", account(&facts.current_user)),
        )),
        _ => None,
    }
}

pub(super) fn restore_space(facts: &Facts, ctx: &RestoreContext) -> Finding {
    let free = match &ctx.free {
        Ok(f) => *f,
        Err(e) => {
            return Finding::new(
                if ctx.snapshot {
                    Severity::Fatal
                } else {
                    Severity::Warning
                },
                Area::Space,
                format!("cannot measure free space on BACKUP_DIR: {e}"),
            )
        }
    };
    if !ctx.snapshot || !facts.database_exists || facts.database_bytes == 0 {
        return Finding::new(
            Severity::Ok,
            Area::Space,
            format!("{} free on BACKUP_DIR", human_bytes(free)),
        );
    }
    let data = facts.database_bytes;
    let estimate = ctx.backup_bytes.unwrap_or(data).min(data.max(1));
    if free < estimate {
        Finding::new(
            Severity::Fatal,
            Area::Space,
            format!("only {} free on BACKUP_DIR, and the safety snapshot of `{}` needs about {}: free space, or pass --no-safety-snapshot", human_bytes(free), ctx.database, human_bytes(estimate)),
        )
    } else if free < data {
        Finding::new(
            Severity::Warning,
            Area::Space,
            format!("{} free on BACKUP_DIR, less than the {} of data in `{}`: the safety snapshot fits only if it compresses as well as this backup", human_bytes(free), human_bytes(data), ctx.database),
        )
    } else {
        Finding::new(
            Severity::Ok,
            Area::Space,
            format!(
                "{} free on BACKUP_DIR, room for the safety snapshot of `{}` ({} of data)",
                human_bytes(free),
                ctx.database,
                human_bytes(data)
            ),
        )
    }
}

pub(super) fn packet_for_backup(facts: &Facts) -> Vec<Finding> {
    let packet = facts.max_allowed_packet;
    let mut out = Vec::new();
    match &facts.largest_value {
        Some(l) if l.bytes > packet => out.push(Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("the largest value, `{}`.`{}` ({}), is larger than max_allowed_packet ({}): a restore assembles it in a user variable, which the server caps at max_allowed_packet, so it would come back as NULL; raise max_allowed_packet on the server to more than {}", l.table, l.column, human_bytes(l.bytes), human_bytes(packet), human_bytes(l.bytes)),
        )),
        Some(l) => out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}, the largest value is {} (`{}`.`{}`)", human_bytes(packet), human_bytes(l.bytes), l.table, l.column),
        )),
        None if packet < STATEMENT_NEED => out.push(Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("max_allowed_packet is only {}: restores of statements up to about {} fail; raise it on the server (--max-allowed-packet=64M)", human_bytes(packet), human_bytes(STATEMENT_NEED)),
        )),
        None => out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}", human_bytes(packet)),
        )),
    }
    if !facts.unscanned.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!(
                "value sizes not checked in {} (too large to scan at start)",
                facts.unscanned.join(", ")
            ),
        ));
    }
    out
}

/// The server version finding.
pub fn version(v: &str) -> Finding {
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let (major, minor) = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    );
    if !v.to_ascii_lowercase().contains("mariadb") {
        return Finding::new(
            Severity::Warning,
            Area::Version,
            format!("server {v} is not MariaDB: selmai-backup is tested against MariaDB only; run a restore drill (verify --restore-test) before relying on its backups"),
        );
    }
    if (major, minor) < TESTED_SINCE {
        return Finding::new(
            Severity::Warning,
            Area::Version,
            format!("MariaDB {v} is older than {}.{}, the oldest release selmai-backup is tested against; upgrade, or run a restore drill (verify --restore-test) before relying on its backups", TESTED_SINCE.0, TESTED_SINCE.1),
        );
    }
    Finding::new(Severity::Ok, Area::Version, format!("server MariaDB {v}"))
}

/// The findings of [`crate::preflight::for_replay`] from gathered facts.
pub fn judge_replay(facts: &Facts, into: &str) -> Report {
    let mut r = Report::default();
    let g = Grants::parse(&facts.grants);
    let who = account(&facts.current_user);
    if !g.global("BINLOG REPLAY") && !g.global("SUPER") {
        r.findings.push(Finding::new(
            Severity::Fatal,
            Area::Privileges,
            format!("{} lacks BINLOG REPLAY on *.*: the archived row changes are replayed as BINLOG statements, which need it; GRANT BINLOG REPLAY ON *.* TO {who}", facts.current_user),
        ));
    }
    let lacking: Vec<&str> = ["UPDATE", "DELETE"]
        .into_iter()
        .filter(|p| !g.on_database(into, p))
        .collect();
    if !lacking.is_empty() {
        r.findings.push(Finding::new(
            Severity::Fatal,
            Area::Privileges,
            format!(
                "{} lacks {} on `{into}`: the archived changes cannot be replayed; GRANT {} ON {}.* TO {who}",
                facts.current_user,
                lacking.join(", "),
                lacking.join(", "),
                db::ident(into)
            ),
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::{messages, USAGE};
    use rstest::rstest;

    fn facts(grants: &[&str]) -> Facts {
        Facts {
            version: "10.11.19-MariaDB-0+deb12u1".into(),
            current_user: "backup@%".into(),
            grants: grants.iter().map(|s| s.to_string()).collect(),
            max_allowed_packet: 64 << 20,
            log_bin: false,
            trust_function_creators: false,
            database_exists: true,
            views: 0,
            database_bytes: 10 << 20,
            largest_value: None,
            unscanned: Vec::new(),
            self_qualified_views: Vec::new(),
            insert_history: true,
            secure_timestamp: "NO".into(),
        }
    }

    fn backup_ctx() -> BackupContext {
        BackupContext {
            database: "selmai".into(),
            space: Ok(1 << 30),
            space_unusable: false,
            drill: false,
        }
    }

    #[test]
    fn backup_with_select_only_warns_naming_each_cost() {
        let f = facts(&[USAGE, "GRANT SELECT ON `selmai`.* TO `backup`@`%`"]);
        let r = judge_backup(&f, &backup_ctx());
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 4, "{r}");
        assert!(w[0].starts_with("missing SHOW VIEW on `selmai`: once the database has a view, every backup fails; GRANT SHOW VIEW ON `selmai`.* TO 'backup'@'%'"), "{r}");
        assert!(
            w[1].contains("missing TRIGGER on `selmai`: triggers are invisible"),
            "{r}"
        );
        assert!(
            w[2].contains("missing EVENT on `selmai`: events are invisible"),
            "{r}"
        );
        assert!(
            w[3].contains("GRANT SELECT ON `mysql`.`proc` TO 'backup'@'%'"),
            "{r}"
        );
        assert!(r.clone().into_result().is_ok());
    }

    #[test]
    fn granted_roles_are_named_when_privileges_are_missing() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT ON `selmai`.* TO `backup`@`%`",
            "GRANT `backup_role` TO `backup`@`%`",
        ]);
        let w = messages(&judge_backup(&f, &backup_ctx()), Severity::Warning);
        assert!(
            w.last()
                .unwrap()
                .contains("SET DEFAULT ROLE `backup_role` FOR 'backup'@'%'"),
            "{w:?}"
        );
    }

    #[test]
    fn backup_with_views_and_no_show_view_is_fatal() {
        let mut f = facts(&[USAGE, "GRANT SELECT ON `selmai`.* TO `backup`@`%`"]);
        f.views = 3;
        let err = judge_backup(&f, &backup_ctx()).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Database(_)));
        assert!(
            err.to_string()
                .contains("which has 3 views: SHOW CREATE VIEW is refused, so every backup fails"),
            "{err}"
        );
    }

    #[test]
    fn backup_without_select_is_fatal() {
        let f = facts(&[USAGE]);
        let err = judge_backup(&f, &backup_ctx()).into_result().unwrap_err();
        assert!(err.to_string().starts_with("preflight: backup@% has no SELECT on `selmai`: nothing can be backed up; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO 'backup'@'%'"), "{err}");
    }

    #[test]
    fn backup_with_everything_is_ok() {
        let mut f = facts(&[
            USAGE,
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO `backup`@`%`",
            "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
        ]);
        f.largest_value = Some(LargestValue {
            table: "files".into(),
            column: "data".into(),
            bytes: 3 << 20,
        });
        let r = judge_backup(&f, &backup_ctx());
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        assert!(
            r.to_string().contains(
                "ok: max_allowed_packet is 67.1 MB, the largest value is 3.1 MB (`files`.`data`)"
            ),
            "{r}"
        );
    }

    #[test]
    fn views_naming_their_own_database_are_a_warning() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.self_qualified_views = vec!["v".into(), "w".into()];
        let w = messages(&judge_backup(&f, &backup_ctx()), Severity::Warning);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("views `v`, `w` name database `selmai` in their definitions"),
            "{w:?}"
        );
        assert!(
            w[0].contains("restore drills fail on them (ERROR 1054)"),
            "{w:?}"
        );
    }

    #[test]
    fn a_value_larger_than_the_packet_is_a_warning() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.max_allowed_packet = 16 << 20;
        f.largest_value = Some(LargestValue {
            table: "files".into(),
            column: "data".into(),
            bytes: 20 << 20,
        });
        f.unscanned = vec!["huge".into()];
        let r = judge_backup(&f, &backup_ctx());
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 1, "{r}");
        assert!(
            w[0].contains("`files`.`data` (21.0 MB), is larger than max_allowed_packet (16.8 MB)"),
            "{r}"
        );
        assert!(
            r.to_string().contains("value sizes not checked in huge"),
            "{r}"
        );
    }

    const BACKUP_GRANTS: &str =
        "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO `backup`@`%`";

    /// The drill finding of a backup preflight with the drill on, if any.
    fn drill_finding(grants: &[&str]) -> Option<Finding> {
        let mut ctx = backup_ctx();
        ctx.drill = true;
        judge_backup(&facts(grants), &ctx)
            .findings
            .into_iter()
            .find(|f| f.message.contains("restore drill"))
    }

    #[rstest]
    // The official image's grant to the app's user: not the drill's databases.
    #[case::database_only(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"], Severity::Warning)]
    // As SHOW GRANTS prints the README's GRANT (escapes doubled).
    #[case::drill_pattern(
        &[USAGE, BACKUP_GRANTS, "GRANT ALL PRIVILEGES ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Ok
    )]
    #[case::drill_pattern_listed(
        &[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Ok
    )]
    #[case::wider_pattern(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai%`.* TO `backup`@`%`"], Severity::Ok)]
    #[case::global(&["GRANT ALL PRIVILEGES ON *.* TO `backup`@`%`"], Severity::Ok)]
    #[case::no_drop(
        &[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Warning
    )]
    fn drill_privileges_are_judged_on_its_scratch_databases(
        #[case] grants: &[&str],
        #[case] want: Severity,
    ) {
        let f = drill_finding(grants).expect("a drill finding");
        assert_eq!(f.severity, want, "{f}");
        assert_eq!(f.area, Area::Privileges);
        if want == Severity::Warning {
            assert!(f.message.contains("DRILL_SCHEDULE"), "{f}");
            assert!(
                f.message.contains("GRANT SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\_drill\\_%`.* TO 'backup'@'%', or set DRILL_SCHEDULE=off"),
                "{f}"
            );
        } else {
            assert!(!f.message.contains("DRILL_SCHEDULE"), "{f}");
        }
    }

    #[test]
    fn drill_privileges_name_what_is_missing_and_are_not_judged_when_it_is_off() {
        let f = drill_finding(&[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"]).unwrap();
        assert!(
            f.message.starts_with("backup@% lacks DROP on the restore drill's scratch databases `selmai\\_drill\\_%`: backups work"),
            "{f}"
        );
        let r = judge_backup(&facts(&[USAGE, BACKUP_GRANTS]), &backup_ctx());
        assert!(!r.to_string().contains("drill"), "{r}");
        // Never fatal: backups work without the drill's privileges.
        let mut ctx = backup_ctx();
        ctx.drill = true;
        let r = judge_backup(
            &facts(&[
                USAGE,
                BACKUP_GRANTS,
                "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
            ]),
            &ctx,
        );
        assert!(r.clone().into_result().is_ok(), "{r}");
    }

    #[test]
    fn an_unwritable_backup_dir_is_fatal_and_says_which_chown() {
        let dir = Path::new("/backups");
        let f = judge_writable(
            dir,
            &Err("Permission denied (os error 13)".into()),
            Some((10001, 10001)),
        );
        assert_eq!((f.severity, f.area), (Severity::Fatal, Area::Space));
        assert_eq!(
            f.message,
            "BACKUP_DIR /backups is not writable by uid 10001 (Permission denied (os error 13)): nothing can be backed up or restored; give the directory mounted there to uid 10001 on the host, e.g. mkdir -p backups && sudo chown 10001:10001 backups for the ./backups of docker-compose.backup.yml (Docker creates a missing one as root's)"
        );
        // Fatal for space: exit 8, like a full disk.
        let err = Report { findings: vec![f] }.into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)), "{err}");
        let f = judge_writable(dir, &Ok(()), Some((10001, 10001)));
        assert_eq!(
            (f.severity, f.message.as_str()),
            (Severity::Ok, "BACKUP_DIR /backups is writable")
        );
    }

    #[test]
    fn the_probe_writes_and_removes_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        probe_writable(tmp.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the probe file was left"
        );
        let err = probe_writable(&tmp.path().join("missing")).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        // A file is no directory to write in.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(probe_writable(&file).is_err());
    }

    #[test]
    fn space_findings_of_a_backup() {
        let f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        let mut ctx = backup_ctx();
        ctx.space = Err("only 1 MB free".into());
        assert_eq!(
            messages(&judge_backup(&f, &ctx), Severity::Warning),
            ["only 1 MB free"]
        );
        ctx.space_unusable = true;
        let err = judge_backup(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)), "{err}");
    }

    #[rstest]
    #[case("10.11.19-MariaDB-0+deb12u1", Severity::Ok)]
    #[case("11.4.2-MariaDB", Severity::Ok)]
    #[case("10.5.0-MariaDB", Severity::Ok)]
    #[case("10.4.32-MariaDB-log", Severity::Warning)]
    #[case("8.0.36", Severity::Warning)]
    #[case("8.4.0-commercial", Severity::Warning)]
    fn versions(#[case] v: &str, #[case] want: Severity) {
        assert_eq!(version(v).severity, want, "{}", version(v).message);
    }

    fn objs(views: usize, procedures: usize, triggers: usize, events: usize) -> Option<Objects> {
        Some(Objects {
            views,
            procedures,
            functions: 0,
            triggers,
            events,
            history_tables: 0,
        })
    }

    fn restore_ctx(definer: Definer, objects: Option<Objects>) -> RestoreContext {
        RestoreContext {
            database: "selmai".into(),
            definer,
            objects,
            backup_bytes: Some(1 << 20),
            largest_value: None,
            snapshot: true,
            free: Ok(1 << 30),
        }
    }

    const RESTORER: &str = "GRANT SELECT, INSERT, CREATE, DROP, INDEX, ALTER, LOCK TABLES, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER ON `selmai`.* TO `backup`@`%`";

    #[test]
    fn restore_without_insert_is_fatal() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT, CREATE, DROP ON `selmai`.* TO `backup`@`%`",
        ]);
        let err = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)))
            .into_result()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("backup@% lacks INSERT on `selmai`: tables cannot be replaced"),
            "{err}"
        );
    }

    #[test]
    fn restore_of_views_without_create_view_is_fatal_only_when_there_are_views() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT, INSERT, CREATE, DROP ON `selmai`.* TO `backup`@`%`",
        ]);
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(2, 0, 0, 0)));
        let fatal = messages(&r, Severity::Fatal);
        assert_eq!(fatal.len(), 1, "{r}");
        assert!(
            fatal[0].starts_with("missing CREATE VIEW on `selmai`, and the backup has 2 views"),
            "{r}"
        );
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        // Without a manifest nothing is known: warnings, ALTER included.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, None));
        assert_eq!(messages(&r, Severity::Fatal).len(), 0, "{r}");
        assert_eq!(messages(&r, Severity::Warning).len(), 5, "{r}");
    }

    #[test]
    fn restore_keeping_definers_without_set_user_warns() {
        let f = facts(&[USAGE, RESTORER]);
        let r = judge_restore(&f, &restore_ctx(Definer::Keep, objs(1, 1, 0, 0)));
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 1, "{r}");
        assert!(
            w[0].contains("RESTORE_DEFINER=keep") && w[0].contains("RESTORE_DEFINER=rewrite"),
            "{r}"
        );
        for (definer, objects) in [
            (Definer::Rewrite, objs(1, 1, 0, 0)),
            (Definer::Strip, None),
            (Definer::Keep, objs(0, 0, 0, 0)),
        ] {
            let r = judge_restore(&f, &restore_ctx(definer, objects));
            assert_eq!(r.at_least(Severity::Warning).count(), 0, "{definer:?}: {r}");
        }
        let f = facts(&[USAGE, RESTORER, "GRANT SET USER ON *.* TO `backup`@`%`"]);
        let r = judge_restore(&f, &restore_ctx(Definer::Keep, objs(1, 1, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_of_triggers_with_binary_logging_needs_super_or_trust() {
        let mut f = facts(&[USAGE, RESTORER]);
        f.log_bin = true;
        let err = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)))
            .into_result()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("refuses the backup's 2 triggers and stored functions (ERROR 1419)"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("SET GLOBAL log_bin_trust_function_creators = 1"),
            "{err}"
        );
        // Procedures alone are fine; a file without manifest only warns.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 3, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, None));
        assert!(
            messages(&r, Severity::Warning)
                .iter()
                .any(|m| m.contains("ERROR 1419")),
            "{r}"
        );
        // Trusted creators, or SUPER, or no binary log: fine.
        f.trust_function_creators = true;
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        let mut f = facts(&[USAGE, RESTORER, "GRANT SUPER ON *.* TO `backup`@`%`"]);
        f.log_bin = true;
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_of_a_value_larger_than_the_packet_is_refused() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.max_allowed_packet = 16 << 20;
        let mut ctx = restore_ctx(Definer::Keep, objs(0, 0, 0, 0));
        ctx.largest_value = Some(20 << 20);
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Database(_)));
        assert!(err.to_string().contains("the backup's largest value is 21.0 MB, more than this server's max_allowed_packet (16.8 MB)"), "{err}");
        ctx.largest_value = Some(16 << 20);
        let r = judge_restore(&f, &ctx);
        assert!(
            r.to_string().contains(
                "ok: max_allowed_packet is 16.8 MB, the backup's largest value is 16.8 MB"
            ),
            "{r}"
        );
        f.max_allowed_packet = 1 << 20;
        ctx.largest_value = Some(1000);
        assert_eq!(
            messages(&judge_restore(&f, &ctx), Severity::Warning).len(),
            1
        );
    }

    #[test]
    fn restore_of_history_needs_insert_history_and_a_secure_timestamp_that_allows_it() {
        let mut objects = objs(0, 0, 0, 0);
        objects.as_mut().unwrap().history_tables = 2;
        let ctx = restore_ctx(Definer::Rewrite, objects);
        let mut f = facts(&[USAGE, RESTORER]);
        let r = judge_restore(&f, &ctx);
        assert!(
            r.to_string()
                .contains("ok: the backup holds the history of 2 system-versioned tables"),
            "{r}"
        );
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        // No history in the backup: nothing said.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)));
        assert!(!r.to_string().contains("system-versioned"), "{r}");

        f.insert_history = false;
        f.version = "10.6.20-MariaDB".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(err.to_string().contains("MariaDB 10.11 and later"), "{err}");

        f.insert_history = true;
        f.secure_timestamp = "YES".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(err.to_string().contains("secure_timestamp=YES"), "{err}");

        f.secure_timestamp = "SUPER".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(
            err.to_string()
                .contains("GRANT BINLOG REPLAY ON *.* TO 'backup'@'%'"),
            "{err}"
        );
        let f = Facts {
            secure_timestamp: "SUPER".into(),
            ..facts(&[
                USAGE,
                RESTORER,
                "GRANT BINLOG REPLAY ON *.* TO `backup`@`%`",
            ])
        };
        let r = judge_restore(&f, &ctx);
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_space_for_the_safety_snapshot() {
        let f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        let mut ctx = restore_ctx(Definer::Keep, objs(0, 0, 0, 0));
        ctx.free = Ok(512 << 10);
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)));
        assert!(err.to_string().contains("the safety snapshot of `selmai` needs about 1.0 MB: free space, or pass --no-safety-snapshot"), "{err}");
        ctx.free = Ok(5 << 20);
        assert_eq!(
            messages(&judge_restore(&f, &ctx), Severity::Warning).len(),
            1
        );
        ctx.snapshot = false;
        ctx.free = Ok(512 << 10);
        assert_eq!(
            judge_restore(&f, &ctx).at_least(Severity::Warning).count(),
            0
        );
    }

    #[test]
    fn replay_needs_binlog_replay_or_super_and_update_delete_on_the_database() {
        let ok = facts(&[
            "GRANT BINLOG REPLAY ON *.* TO `backup`@`%`",
            "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`",
        ]);
        assert!(judge_replay(&ok, "selmai").into_result().is_ok());
        let old = facts(&[
            "GRANT SUPER ON *.* TO `backup`@`%`",
            "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`",
        ]);
        assert!(judge_replay(&old, "selmai").into_result().is_ok());
        let none = facts(&["GRANT SELECT, INSERT ON `selmai`.* TO `backup`@`%`"]);
        let text: Vec<String> = judge_replay(&none, "selmai")
            .at_least(Severity::Fatal)
            .map(|f| f.to_string())
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("GRANT BINLOG REPLAY ON *.* TO 'backup'@'%'"),
            "{text:?}"
        );
        assert!(
            text[1].contains("GRANT UPDATE, DELETE ON `selmai`.*"),
            "{text:?}"
        );
    }
}

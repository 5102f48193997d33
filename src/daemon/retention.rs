//! Which backups to keep: grandfather-father-son retention.
//!
//! [`plan_times`] is a pure function from backup times to a verdict per backup,
//! with the reasons an operator reads in `prune --dry-run`: walking from the
//! newest, the newest backup of each of the last `daily` days that have a
//! backup is kept, likewise the newest of each of the last `weekly` ISO
//! weeks and `monthly` months (restic's `forget --keep-daily` rules; days
//! without a backup do not use up a slot). Days, weeks and months are those
//! of the operator's time zone. The newest backup is always kept, whatever
//! the counts.
//!
//! [`plan`] judges one target: it lists only our own backups
//! (`catalog::list_db`, so foreign files are never candidates; for file
//! archives [`plan_archives`] lists one kind's prefix, for full backups
//! [`plan_full`] whole sets) and reads nothing else. [`execute`] carries a
//! plan out: it deletes each condemned backup and its manifest (in the
//! reverse of the order they were published in), and
//! reports the deletes that failed instead of stopping (credentials that
//! may put but not delete must not fail a backup).
//! `prune --dry-run` is a plan that is not executed: no flag reaches the
//! code that deletes, and no target pretends to delete (a wrapper that
//! swallowed deletes would leave the log and the result claiming them).
//! Deciding *when* to prune (only after a successful backup) is the
//! caller's business.
//!
//! [`prune_binlog`] deletes the binlog segments a point-in-time restore can
//! no longer use: those that end before the snapshot of the oldest dump
//! kept on the same target. Never one a kept dump needs.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::format::catalog::{self, Entry};
use crate::format::manifest;
use crate::target::local::LocalTarget;
use crate::target::{Target, TargetError};

pub use crate::config::retention::Policy;

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// The newest backup, kept whatever the counts.
    Newest,
    /// The newest of its day: slot `n` of `of`.
    Daily(u32, u32),
    /// The newest of its ISO week.
    Weekly(u32, u32),
    /// The newest of its month.
    Monthly(u32, u32),
    /// Off the volume, data whose manifest has not arrived, not older than
    /// every complete backup kept there: the catch-up completes it.
    Completing,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Newest => f.write_str("newest"),
            KeepReason::Daily(n, of) => write!(f, "daily {n}/{of}"),
            KeepReason::Weekly(n, of) => write!(f, "weekly {n}/{of}"),
            KeepReason::Monthly(n, of) => write!(f, "monthly {n}/{of}"),
            KeepReason::Completing => f.write_str("its manifest is still to be copied"),
        }
    }
}

/// Why a backup is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// A newer backup of the same day is kept.
    SameDay(NaiveDate),
    /// Older than every kept period.
    Expired(Policy),
    /// A full backup without its set manifest: it never finished.
    Incomplete,
    /// Off the volume, data without its manifest, older than every
    /// complete backup kept there: a copy that was never completed.
    NoManifest,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::SameDay(d) => write!(f, "a newer backup of {d} is kept"),
            DeleteReason::Expired(p) => write!(
                f,
                "not the newest of any of the last {} days, {} ISO weeks or {} months that have backups",
                p.daily, p.weekly, p.monthly
            ),
            DeleteReason::Incomplete => {
                f.write_str("a full backup that did not finish (no set manifest)")
            }
            DeleteReason::NoManifest => f.write_str(
                "a copy without its manifest, older than every complete backup kept here",
            ),
        }
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, for these reasons (at least one).
    Keep(Vec<KeepReason>),
    /// Deleted, for this reason.
    Delete(DeleteReason),
}

impl Verdict {
    /// Whether the backup stays.
    pub fn keeps(&self) -> bool {
        matches!(self, Verdict::Keep(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Keep(r) => {
                let r: Vec<String> = r.iter().map(ToString::to_string).collect();
                write!(f, "keep ({})", r.join(", "))
            }
            Verdict::Delete(r) => write!(f, "delete ({r})"),
        }
    }
}

/// Decide, for backups taken at `times` (any order, duplicates allowed),
/// which to keep under `policy` with days in `tz`. The result is in the
/// order of `times`.
pub fn plan_times(times: &[DateTime<Utc>], policy: &Policy, tz: Tz) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; for equal times the later index wins, deterministically.
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); times.len()];
    if let Some(&newest) = order.first() {
        reasons[newest].push(KeepReason::Newest);
    }
    let day = |i: usize| times[i].with_timezone(&tz).date_naive();
    // (slots, period key of a day, reason for slot n of N)
    type Rule = (u32, fn(NaiveDate) -> (i32, u32), fn(u32, u32) -> KeepReason);
    let rules: [Rule; 3] = [
        (policy.daily, |d| (d.year(), d.ordinal()), KeepReason::Daily),
        (
            policy.weekly,
            |d| (d.iso_week().year(), d.iso_week().week()),
            KeepReason::Weekly,
        ),
        (
            policy.monthly,
            |d| (d.year(), d.month()),
            KeepReason::Monthly,
        ),
    ];
    for (count, key, reason) in rules {
        let mut last = None;
        let mut used = 0;
        for &i in &order {
            if used == count {
                break;
            }
            let k = key(day(i));
            if last != Some(k) {
                used += 1;
                last = Some(k);
                reasons[i].push(reason(used, count));
            }
        }
    }
    let kept_days: std::collections::HashSet<NaiveDate> = (0..times.len())
        .filter(|&i| !reasons[i].is_empty())
        .map(day)
        .collect();
    reasons
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if !r.is_empty() {
                Verdict::Keep(r)
            } else if kept_days.contains(&day(i)) {
                Verdict::Delete(DeleteReason::SameDay(day(i)))
            } else {
                Verdict::Delete(DeleteReason::Expired(*policy))
            }
        })
        .collect()
}

/// A delete that failed.
#[derive(Debug)]
pub struct DeleteFailure {
    /// The object that could not be deleted.
    pub name: String,
    /// Why.
    pub error: TargetError,
}

/// What pruning one target would do ([`plan`], [`plan_archives`],
/// [`plan_full`]) and, once [`execute`]d, did.
#[derive(Debug)]
pub struct Pruned {
    /// Which target.
    pub target: &'static str,
    /// Every backup of ours in it, newest first, with its verdict.
    pub verdicts: Vec<(Entry, Verdict)>,
    /// Manifests whose backup is gone (a delete interrupted between the
    /// two); deleted with the backups.
    pub orphans: Vec<String>,
    /// Backups deleted (with their manifests); empty until executed.
    pub deleted: Vec<String>,
    /// Deletes that failed; the backups stay.
    pub failed: Vec<DeleteFailure>,
    /// The full sets planned for deletion, whole (full backups only).
    doomed_sets: Vec<catalog::FullSetEntry>,
}

/// The verdict on each database backup with `prefix` in `target`; reads
/// only (what `prune --dry-run` prints).
pub async fn plan(
    target: &dyn Target,
    prefix: &str,
    policy: &Policy,
    tz: Tz,
) -> Result<Pruned, TargetError> {
    let (entries, orphans) =
        catalog::list_with_orphans(target, prefix, catalog::parse_db_name).await?;
    Ok(judge(target, entries, orphans, policy, tz))
}

/// [`plan`] for the file archives with `prefix`.
pub async fn plan_archives(
    target: &dyn Target,
    prefix: &str,
    policy: &Policy,
    tz: Tz,
) -> Result<Pruned, TargetError> {
    let (entries, orphans) =
        catalog::list_with_orphans(target, prefix, catalog::parse_archive_name).await?;
    Ok(judge(target, entries, orphans, policy, tz))
}

/// [`plan`] for full backups with `prefix`: whole sets are planned, kept
/// and deleted, never a part alone. A set without its set manifest did
/// not finish and is deleted (whoever executes the plan holds the
/// `BACKUP_DIR` lock, so no full backup is in progress).
pub async fn plan_full(
    target: &dyn Target,
    prefix: &str,
    policy: &Policy,
    tz: Tz,
) -> Result<Pruned, TargetError> {
    let sets = catalog::list_full(target, prefix).await?;
    let complete: Vec<DateTime<Utc>> = sets
        .iter()
        .filter(|s| s.complete)
        .map(|s| s.taken)
        .collect();
    let mut planned = plan_times(&complete, policy, tz).into_iter();
    let mut verdicts = Vec::new();
    let mut doomed_sets = Vec::new();
    for set in sets {
        let verdict = if set.complete {
            planned.next().expect("one verdict per complete set")
        } else {
            Verdict::Delete(DeleteReason::Incomplete)
        };
        let entry = Entry {
            name: set.name.clone(),
            parsed: catalog::BackupName {
                taken: set.taken,
                extension: catalog::SET_SUFFIX.to_owned(),
                encrypted: false,
                gpg: false,
            },
            size: set.objects.iter().map(|o| o.size).sum(),
            has_manifest: set.complete,
            location: set.location,
        };
        if !verdict.keeps() {
            doomed_sets.push(set);
        }
        verdicts.push((entry, verdict));
    }
    Ok(Pruned {
        target: target.label(),
        verdicts,
        orphans: Vec::new(),
        deleted: Vec::new(),
        failed: Vec::new(),
        doomed_sets,
    })
}

/// Carry out `plan` on `target` (the target it was made from): delete
/// what it does not keep (each backup and its manifest in the reverse of
/// the order they were published in: the data first on the volume, the
/// manifest first off-site), whole sets set manifest first, then the
/// orphan manifests.
pub async fn execute(target: &dyn Target, mut plan: Pruned) -> Pruned {
    let sets = std::mem::take(&mut plan.doomed_sets);
    for set in &sets {
        let fails = delete_set(target, set).await;
        if fails.is_empty() {
            let reason = plan
                .verdicts
                .iter()
                .find(|(e, _)| e.name == set.name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            tracing::info!(target = target.label(), set = %set.name, reason = %reason, "deleted by retention");
            plan.deleted.push(set.name.clone());
        }
        plan.failed.extend(fails);
    }
    if !sets.is_empty() {
        return plan;
    }
    for (e, v) in &plan.verdicts {
        if v.keeps() {
            continue;
        }
        // The reverse of the order a backup is published in, so that it
        // stops counting first. On the volume the data goes first: a
        // manifest without its backup is harmless, a backup without its
        // manifest would look like a file of the old shell script.
        // Off-site the manifest goes first: data without it is not listed.
        let manifest = manifest::name_for(&e.name);
        let (first, second) = if target.label() == LocalTarget::LABEL {
            (&e.name, &manifest)
        } else {
            (&manifest, &e.name)
        };
        let result = match target.delete(first).await {
            Ok(()) => target.delete(second).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                tracing::info!(target = target.label(), file = %e.name, reason = %v, "deleted by retention");
                plan.deleted.push(e.name.clone());
            }
            Err(error) => {
                tracing::warn!(target = target.label(), file = %e.name, error = %error, "retention could not delete a backup; it stays");
                plan.failed.push(DeleteFailure {
                    name: e.name.clone(),
                    error,
                });
            }
        }
    }
    for name in &plan.orphans {
        match target.delete(name).await {
            Ok(()) => {
                tracing::info!(target = target.label(), file = %name, "deleted a manifest whose backup is gone");
                plan.deleted.push(name.clone());
            }
            Err(error) => plan.failed.push(DeleteFailure {
                name: name.clone(),
                error,
            }),
        }
    }
    plan
}

/// Delete every object of a full backup, the set manifest first (a set
/// left half-deleted is then incomplete, never complete with parts
/// missing). Returns the deletes that failed.
pub async fn delete_set(target: &dyn Target, set: &catalog::FullSetEntry) -> Vec<DeleteFailure> {
    let mut names: Vec<&str> = set.objects.iter().map(|o| o.name.as_str()).collect();
    names.sort_by_key(|n| !n.ends_with(catalog::SET_SUFFIX));
    let mut failed = Vec::new();
    for name in names {
        if let Err(error) = target.delete(name).await {
            tracing::warn!(target = target.label(), file = %name, error = %error, "could not delete a part of a full backup; it stays");
            failed.push(DeleteFailure {
                name: name.to_owned(),
                error,
            });
        }
    }
    failed
}

/// The verdicts of `policy` on `entries` (no I/O). Off the volume a
/// backup counts once its manifest is there (it is copied last), so data
/// without one takes no slot: it is deleted once it is older than every
/// complete backup kept there, and kept otherwise (the catch-up completes
/// it without sending the data again; with no complete backup there,
/// nothing of ours is deleted for it). On the volume such
/// data is a file of the old shell script and is judged like any backup.
fn judge(
    target: &dyn Target,
    entries: Vec<Entry>,
    orphans: Vec<String>,
    policy: &Policy,
    tz: Tz,
) -> Pruned {
    let offsite = target.label() != LocalTarget::LABEL;
    let (counted, pending): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| !offsite || e.has_manifest);
    let times: Vec<DateTime<Utc>> = counted.iter().map(|e| e.parsed.taken).collect();
    let mut verdicts: Vec<(Entry, Verdict)> = counted
        .into_iter()
        .zip(plan_times(&times, policy, tz))
        .collect();
    let oldest_kept = verdicts
        .iter()
        .filter(|(_, v)| v.keeps())
        .map(|(e, _)| e.parsed.taken)
        .min();
    for e in pending {
        let verdict = match oldest_kept {
            Some(t) if e.parsed.taken < t => Verdict::Delete(DeleteReason::NoManifest),
            _ => Verdict::Keep(vec![KeepReason::Completing]),
        };
        verdicts.push((e, verdict));
    }
    verdicts.sort_by(|(a, _), (b, _)| {
        b.parsed
            .taken
            .cmp(&a.parsed.taken)
            .then_with(|| b.name.cmp(&a.name))
    });
    Pruned {
        target: target.label(),
        verdicts,
        orphans,
        deleted: Vec::new(),
        failed: Vec::new(),
        doomed_sets: Vec::new(),
    }
}

/// Delete from `target` the binlog segments that end before the snapshot
/// of the oldest dump kept there (call after retention has [`execute`]d); returns the names
/// deleted and the deletes that failed. Nothing is deleted when the oldest
/// dump has no binlog position or the chain does not hold it.
pub async fn prune_binlog(
    target: &dyn Target,
    prefix: &str,
) -> Result<(Vec<String>, Vec<DeleteFailure>), TargetError> {
    let mut dumps = catalog::list_db(target, prefix).await?;
    dumps.retain(|e| e.has_manifest);
    dumps.sort_by_key(|e| e.parsed.taken);
    let Some(oldest) = dumps.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let name = manifest::name_for(&oldest.name);
    let bytes = crate::target::get_bytes(target, &name).await?;
    let Some(snap) = manifest::Manifest::parse(&name, &bytes)
        .ok()
        .and_then(|m| m.snapshot)
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let chain = match crate::binlog::store::list_chain(target, prefix).await {
        Ok(c) => c,
        Err(crate::binlog::StoreError::Target(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(target = target.label(), error = %e, "binlog retention skipped");
            return Ok((Vec::new(), Vec::new()));
        }
    };
    let Some(keep_from) = crate::binlog::store::segment_at(&chain, &snap.file, snap.position)
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut deleted, mut failed) = (Vec::new(), Vec::new());
    for m in &chain[..keep_from] {
        // Data first: a manifest without its segment is left out of the chain.
        let r = match target.delete(&m.file).await {
            Ok(()) => target.delete(&manifest::name_for(&m.file)).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                tracing::info!(target = target.label(), file = %m.file, "binlog segment deleted by retention (before the oldest kept dump)");
                deleted.push(m.file.clone());
            }
            Err(error) => failed.push(DeleteFailure {
                name: m.file.clone(),
                error,
            }),
        }
    }
    Ok((deleted, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone};
    use rstest::rstest;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn policy(daily: u32, weekly: u32, monthly: u32) -> Policy {
        Policy {
            daily,
            weekly,
            monthly,
        }
    }

    /// The kept backups as (date, verdict text), newest first.
    fn kept(times: &[DateTime<Utc>], p: Policy, tz: Tz) -> Vec<(String, String)> {
        let v = plan_times(times, &p, tz);
        let mut out: Vec<(DateTime<Utc>, String)> = times
            .iter()
            .zip(v)
            .filter(|(_, v)| v.keeps())
            .map(|(t, v)| (*t, v.to_string()))
            .collect();
        out.sort_by_key(|o| std::cmp::Reverse(o.0));
        out.into_iter()
            .map(|(t, v)| (t.format("%Y-%m-%d %H").to_string(), v))
            .collect()
    }

    fn daily_backups(last: DateTime<Utc>, days: i64) -> Vec<DateTime<Utc>> {
        (0..days).map(|i| last - Duration::days(i)).collect()
    }

    #[test]
    fn four_hundred_days_of_daily_backups_keep_exactly_these() {
        // 400 backups at 02:00 UTC, the newest on Wednesday 2025-03-12.
        let times = daily_backups(at(2025, 3, 12, 2), 400);
        let got = kept(&times, Policy::default(), Tz::UTC);
        let want = [
            (
                "2025-03-12 02",
                "keep (newest, daily 1/7, weekly 1/4, monthly 1/3)",
            ),
            ("2025-03-11 02", "keep (daily 2/7)"),
            ("2025-03-10 02", "keep (daily 3/7)"),
            // Sunday: the newest of ISO week 10.
            ("2025-03-09 02", "keep (daily 4/7, weekly 2/4)"),
            ("2025-03-08 02", "keep (daily 5/7)"),
            ("2025-03-07 02", "keep (daily 6/7)"),
            ("2025-03-06 02", "keep (daily 7/7)"),
            ("2025-03-02 02", "keep (weekly 3/4)"),
            ("2025-02-28 02", "keep (monthly 2/3)"),
            ("2025-02-23 02", "keep (weekly 4/4)"),
            ("2025-01-31 02", "keep (monthly 3/3)"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        let deleted = plan_times(&times, &Policy::default(), Tz::UTC)
            .iter()
            .filter(|v| !v.keeps())
            .count();
        assert_eq!(deleted, 400 - 11);
    }

    #[test]
    fn the_plan_is_the_same_whatever_the_input_order() {
        let mut times = daily_backups(at(2025, 3, 12, 2), 60);
        let a = kept(&times, Policy::default(), Tz::UTC);
        times.reverse();
        times.swap(3, 40);
        assert_eq!(kept(&times, Policy::default(), Tz::UTC), a);
    }

    #[test]
    fn several_backups_a_day_keep_the_newest_of_each_day() {
        let mut times = Vec::new();
        for d in 1..=10 {
            for h in [2, 8, 14, 20] {
                times.push(at(2025, 1, d, h));
            }
        }
        let v = plan_times(&times, &policy(3, 0, 0), Tz::UTC);
        let keep: Vec<_> = times
            .iter()
            .zip(&v)
            .filter(|(_, v)| v.keeps())
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            keep,
            [at(2025, 1, 8, 20), at(2025, 1, 9, 20), at(2025, 1, 10, 20)]
        );
        // The 14:00 backup of a kept day says why it goes.
        let i = times
            .iter()
            .position(|t| *t == at(2025, 1, 10, 14))
            .unwrap();
        assert_eq!(
            v[i].to_string(),
            "delete (a newer backup of 2025-01-10 is kept)"
        );
        let j = times.iter().position(|t| *t == at(2025, 1, 2, 20)).unwrap();
        assert!(v[j]
            .to_string()
            .starts_with("delete (not the newest of any of the last 3 days"));
    }

    #[test]
    fn gaps_do_not_use_up_daily_slots() {
        // Backups on the 1st, 2nd, 5th, 9th and 20th: the last 3 days *with
        // backups* are kept, however far apart.
        let times: Vec<_> = [1, 2, 5, 9, 20].map(|d| at(2025, 1, d, 2)).to_vec();
        let got: Vec<String> = kept(&times, policy(3, 0, 0), Tz::UTC)
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(got, ["2025-01-20 02", "2025-01-09 02", "2025-01-05 02"]);
    }

    #[rstest]
    // Sunday 2024-12-29 is in ISO week 2024-W52, Monday 2024-12-30 in
    // 2025-W01 (with 2024-12-31 and 2025-01-01): three weeks, three keeps.
    #[case(&[(2024, 12, 28), (2024, 12, 29), (2024, 12, 30), (2024, 12, 31), (2025, 1, 1)], 3,
           &["2025-01-01", "2024-12-29"])]
    // 2020 has an ISO week 53 (Mon 2020-12-28 .. Sun 2021-01-03).
    #[case(&[(2020, 12, 27), (2020, 12, 28), (2021, 1, 3), (2021, 1, 4)], 4,
           &["2021-01-04", "2021-01-03", "2020-12-27"])]
    fn weekly_uses_iso_weeks_across_new_year(
        #[case] days: &[(i32, u32, u32)],
        #[case] weekly: u32,
        #[case] want: &[&str],
    ) {
        let times: Vec<_> = days.iter().map(|&(y, m, d)| at(y, m, d, 2)).collect();
        let got: Vec<String> = kept(&times, policy(0, weekly, 0), Tz::UTC)
            .into_iter()
            .map(|k| k.0[..10].to_owned())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn monthly_keeps_the_last_backup_of_each_month_including_february_of_a_leap_year() {
        let times = daily_backups(at(2024, 4, 2, 2), 70);
        let got = kept(&times, policy(0, 0, 3), Tz::UTC);
        assert_eq!(
            got,
            [
                (
                    "2024-04-02 02".to_string(),
                    "keep (newest, monthly 1/3)".to_string()
                ),
                ("2024-03-31 02".into(), "keep (monthly 2/3)".into()),
                ("2024-02-29 02".into(), "keep (monthly 3/3)".into()),
            ]
        );
    }

    #[test]
    fn days_and_months_are_those_of_the_time_zone() {
        // 2025-01-31 23:30 UTC is 2025-02-01 00:30 in Paris.
        let times = [
            Utc.with_ymd_and_hms(2025, 1, 31, 22, 30, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 1, 31, 23, 30, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 2, 1, 12, 0, 0).unwrap(),
        ];
        // In UTC the two on the 31st are one month; in Paris, the 23:30 one is February.
        let utc_keep = plan_times(&times, &policy(0, 0, 2), Tz::UTC);
        assert_eq!(
            utc_keep.iter().map(Verdict::keeps).collect::<Vec<_>>(),
            [false, true, true]
        );
        let paris_keep = plan_times(&times, &policy(0, 0, 2), chrono_tz::Europe::Paris);
        assert_eq!(
            paris_keep.iter().map(Verdict::keeps).collect::<Vec<_>>(),
            [true, false, true]
        );
        let paris_days = plan_times(&times, &policy(2, 0, 0), chrono_tz::Europe::Paris);
        assert_eq!(
            paris_days[1],
            Verdict::Delete(DeleteReason::SameDay(date("2025-02-01")))
        );
    }

    #[test]
    fn the_newest_is_kept_even_with_all_counts_at_zero() {
        let times = daily_backups(at(2025, 3, 12, 2), 5);
        let got = kept(&times, policy(0, 0, 0), Tz::UTC);
        assert_eq!(
            got,
            [("2025-03-12 02".to_string(), "keep (newest)".to_string())]
        );
    }

    #[test]
    fn fewer_backups_than_slots_keeps_them_all() {
        let times = daily_backups(at(2025, 3, 12, 2), 5);
        assert!(plan_times(&times, &Policy::default(), Tz::UTC)
            .iter()
            .all(Verdict::keeps));
        assert!(plan_times(&[], &Policy::default(), Tz::UTC).is_empty());
    }

    #[test]
    fn identical_times_keep_one() {
        let t = at(2025, 3, 12, 2);
        let v = plan_times(&[t, t], &Policy::default(), Tz::UTC);
        assert_eq!(v.iter().filter(|v| v.keeps()).count(), 1);
    }

    /// A target that is only a label, for [`judge`].
    #[derive(Debug)]
    struct Labelled(&'static str);

    #[async_trait::async_trait]
    impl Target for Labelled {
        fn label(&self) -> &'static str {
            self.0
        }
        async fn list(&self, _: &str) -> Result<Vec<crate::target::ObjectInfo>, TargetError> {
            unreachable!()
        }
        async fn metadata(
            &self,
            _: &str,
        ) -> Result<Option<crate::target::ObjectInfo>, TargetError> {
            unreachable!()
        }
        async fn create(&self, _: &str) -> Result<Box<dyn crate::target::Upload>, TargetError> {
            unreachable!()
        }
        async fn open(&self, _: &str) -> Result<crate::target::ObjectReader, TargetError> {
            unreachable!()
        }
        async fn delete(&self, _: &str) -> Result<(), TargetError> {
            unreachable!()
        }
    }

    fn entry(name: &str, taken: DateTime<Utc>, has_manifest: bool) -> Entry {
        Entry {
            name: name.into(),
            parsed: catalog::BackupName {
                taken,
                extension: ".sql.gz".into(),
                encrypted: false,
                gpg: false,
            },
            size: 1,
            has_manifest,
            location: "x",
        }
    }

    fn verdicts_on(label: &'static str) -> Vec<(String, String)> {
        let entries = vec![
            entry("old_cut", at(2025, 1, 9, 3), false),
            entry("a", at(2025, 1, 10, 3), true),
            entry("a_later_cut", at(2025, 1, 10, 9), false),
            entry("b_cut", at(2025, 1, 11, 3), false),
            entry("c", at(2025, 1, 12, 3), true),
        ];
        let plan = judge(
            &Labelled(label),
            entries,
            Vec::new(),
            &policy(2, 0, 0),
            Tz::UTC,
        );
        plan.verdicts
            .iter()
            .map(|(e, v)| (e.name.clone(), v.to_string()))
            .collect()
    }

    // Off the volume, data without its manifest is not a backup: it takes
    // no day's slot from a complete one, is kept while the catch-up may
    // complete it, and goes once older than every complete backup kept.
    #[test]
    fn off_the_volume_data_without_its_manifest_takes_no_slot() {
        let got = verdicts_on("sftp");
        let want = [
            ("c", "keep (newest, daily 1/2)"),
            ("b_cut", "keep (its manifest is still to be copied)"),
            ("a_later_cut", "keep (its manifest is still to be copied)"),
            ("a", "keep (daily 2/2)"),
            (
                "old_cut",
                "delete (a copy without its manifest, older than every complete backup kept here)",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        // On the volume such a file is the old shell script's, judged like
        // any backup: it takes a day's slot, and "a" goes.
        let volume = verdicts_on(LocalTarget::LABEL);
        assert_eq!(volume[1], ("b_cut".into(), "keep (daily 2/2)".into()));
        assert!(volume[3].1.starts_with("delete"), "{volume:?}");
    }
}

//! No overlap with a one-off run holding the lock; a backup that cannot fit is refused before it starts.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_run_waits_for_a_one_off_run_holding_the_lock() {
    let db = small_db("d_lockwait");
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&db.name, dir.path(), &[]);
    let held = catalog::lock_dir(dir.path()).unwrap();
    let j = jobs(&s, tool::volume(dir.path()))
        .with_lock_wait(Duration::from_secs(30), Duration::from_millis(100));
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(held);
        Instant::now()
    });
    let run = j.run_once(Kind::Db, Trigger::Schedule).await;
    let released = release.await.unwrap();
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert!(Instant::now() > released);
    assert_eq!(backups(dir.path()).len(), 1);

    // Held for longer than the wait: a failed run saying why. The run has
    // dropped its lock, but a process another test forks at that moment
    // holds a copy of the descriptor until its exec closes it: wait for that.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _held = loop {
        match catalog::lock_dir(dir.path()) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "the lock stays taken: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let j = j.with_lock_wait(Duration::from_millis(300), Duration::from_millis(100));
    let run = j.run_once(Kind::Db, Trigger::Schedule).await;
    assert_eq!(run.outcome, Outcome::Failed);
    assert!(run
        .error
        .unwrap()
        .contains("another backup or restore is running"),);
    assert_eq!(backups(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_cannot_fit_is_refused_before_it_starts() {
    let db = small_db("d_space");
    let fs = Tmpfs::mount(1024, "");
    let dir = fs.dir.path();
    // The last backup took 5 MB: the next one would not fit in 1 MiB.
    record(dir, 2, 5_000_000, Offsite::NotConfigured);
    let hook = HttpSink::start(200);
    let s = tool::settings(&db.name, dir, &[("NOTIFY_WEBHOOK_URL", &hook.url)]);
    let run = jobs(&s, tool::volume(dir))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Failed);
    let err = run.error.unwrap();
    assert!(err.contains("the last backup took 5.0 MB"), "{err}");
    assert_eq!(tool::files(dir), Vec::<String>::new());
    assert_eq!(
        hook.expect(Duration::from_secs(5), "alert").json()["event"],
        "backup_failed"
    );
    // The one-off command checks too (exit 8: storage).
    let vars = tool::vars(&db.name, dir);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("free"), "{err}");
}

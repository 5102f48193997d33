//! The bucket as an off-site copy, end to end through the binary: one pass
//! writes the volume and the bucket, a lost volume is restored from the
//! bucket alone, foreign objects under our prefix are ignored, and an
//! unreachable bucket keeps the local backup, exits 8 and turns `health`
//! unhealthy. (Target-level behaviour is in `target_conformance`, faults in
//! `s3_faults`.)

use std::path::Path;

use selmai_backup::target::Target;

use crate::support::bucket::{bucket_vars, create_bucket, raw_bucket, s3_endpoint, unique_bucket};
use crate::support::tool;
use crate::support::{assert_same_database, TestDb};

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_volume_is_restored_from_the_bucket_alone() {
    let src = TestDb::new("s3_restore");
    src.load_sakila();
    let bucket = unique_bucket("restore");
    create_bucket(&bucket).await;
    // Something else's object under our prefix: never listed, never restored.
    raw_bucket(&bucket)
        .put_object(
            "selmai/prod/selmai_backup_29990101_000000.sql.gz",
            b"not ours, no manifest",
        )
        .await
        .unwrap();
    raw_bucket(&bucket)
        .put_object("selmai/prod/notes.txt", b"foreign")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let vars = bucket_vars(
        &src.name,
        dir.path(),
        &s3_endpoint(),
        &bucket,
        &[("BACKUP_PASSPHRASE", "off-site")],
    );
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let name = Path::new(out.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // The bucket holds the same bytes as the volume, and the manifest.
    let local = std::fs::read(dir.path().join(&name)).unwrap();
    let remote = raw_bucket(&bucket)
        .get_object(format!("selmai/prod/{name}"))
        .await
        .unwrap();
    assert_eq!(
        remote.bytes().as_ref(),
        &local[..],
        "the bucket copy differs from the volume"
    );
    let manifest = raw_bucket(&bucket)
        .get_object(format!("selmai/prod/{name}.manifest.json"))
        .await
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(manifest.bytes()).unwrap();
    use sha2::Digest;
    assert_eq!(m["sha256"], hex::encode(sha2::Sha256::digest(&local)));

    let (code, listing, _) = tool::outcome(&tool::run(&vars, &["list", "--json"]));
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let ours = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap();
    assert_eq!(ours["locations"], serde_json::json!(["volume", "bucket"]));

    // The server is lost with its volume.
    for f in tool::files(dir.path()) {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let dst = TestDb::new("s3_restore_dst");
    let vars = bucket_vars(
        &dst.name,
        dir.path(),
        &s3_endpoint(),
        &bucket,
        &[("BACKUP_PASSPHRASE", "off-site")],
    );
    // Another database's backup: --into says the restore into it is meant.
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", "latest", "--into", &dst.name, "--yes"],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&name),
        "restored the newest complete backup, not the foreign file: {err}"
    );
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_bucket_keeps_the_local_backup_and_is_loud() {
    let db = TestDb::new("s3_down");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of the loopback address.
    let vars = bucket_vars(&db.name, dir.path(), "http://127.0.0.1:9", "nowhere", &[]);
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("bucket"), "{err}");
    let local = Path::new(out.trim());
    assert!(local.is_file(), "the local backup is kept: {out}");
    assert!(selmai_backup::target::local::LocalTarget::new(dir.path())
        .metadata(&format!(
            "{}.manifest.json",
            local.file_name().unwrap().to_string_lossy()
        ))
        .await
        .unwrap()
        .is_some());
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["health"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("off-site"), "{err}");
}

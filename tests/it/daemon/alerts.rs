//! Alerts by webhook (json, slack, ntfy), mail and pings, and a failing channel that never fails the backup.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn failure_alerts_by_webhook_mail_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let ping = HttpSink::start(200);
    let smtp = SmtpSink::start();
    let port = smtp.port.to_string();
    let s = tool::settings(
        "d_no_such_database",
        dir.path(),
        &[
            ("NOTIFY_WEBHOOK_URL", &hook.url),
            ("NOTIFY_PING_URL", &format!("{}/ping/abc", ping.url)),
            ("NOTIFY_SMTP_HOST", "127.0.0.1"),
            ("NOTIFY_SMTP_PORT", &port),
            ("NOTIFY_SMTP_TLS", "none"),
            ("NOTIFY_SMTP_FROM", "backup@example.org"),
            ("NOTIFY_SMTP_TO", "admin@example.org"),
        ],
    );
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Failed);
    let error = run.error.clone().unwrap();
    assert!(error.contains("d_no_such_database"), "{error}");

    let ev = hook.expect(Duration::from_secs(5), "webhook").json();
    assert_eq!(ev["event"], "backup_failed");
    assert_eq!(ev["kind"], "db");
    assert_eq!(ev["error"], error.as_str());
    assert!(ev["file"].is_null() && ev["size"].is_null());

    let start = ping.expect(Duration::from_secs(5), "start ping");
    assert_eq!(start.path, "/ping/abc/start");
    let fail = ping.expect(Duration::from_secs(5), "fail ping");
    assert_eq!(fail.path, "/ping/abc/fail");
    assert!(fail.body.contains("d_no_such_database"), "{}", fail.body);

    let mail = smtp
        .rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a mail");
    assert_eq!(mail.from, "<backup@example.org>");
    assert_eq!(mail.to, ["<admin@example.org>"]);
    assert!(
        mail.data.contains("Subject: selmai-backup on") && mail.data.contains("db backup FAILED"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("d_no_such_database"), "{}", mail.data);
    // Recorded, so `health` explains the failure.
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs[0].outcome, Outcome::Failed);
    assert!(backups(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn success_pings_but_alerts_only_when_asked() {
    let db = small_db("d_quiet");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let ping = HttpSink::start(200);
    let smtp = SmtpSink::start();
    let port = smtp.port.to_string();
    let mut extra = vec![
        ("NOTIFY_WEBHOOK_URL", hook.url.clone()),
        ("NOTIFY_PING_URL", ping.url.clone()),
        ("NOTIFY_SMTP_HOST", "127.0.0.1".into()),
        ("NOTIFY_SMTP_PORT", port),
        ("NOTIFY_SMTP_TLS", "none".into()),
        ("NOTIFY_SMTP_FROM", "backup@example.org".into()),
        ("NOTIFY_SMTP_TO", "admin@example.org".into()),
    ];
    let settings = |v: &[(&str, String)]| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tool::settings(&db.name, dir.path(), &refs)
    };
    let s = settings(&extra);
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert_eq!(ping.expect(Duration::from_secs(5), "start").path, "/start");
    assert_eq!(ping.expect(Duration::from_secs(5), "success").path, "/");
    assert!(
        hook.next(Duration::from_millis(500)).is_none(),
        "success alerted without NOTIFY_ON_SUCCESS"
    );
    assert!(smtp.rx.recv_timeout(Duration::from_millis(500)).is_err());

    extra.push(("NOTIFY_ON_SUCCESS", "true".into()));
    let s = settings(&extra);
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    let ev = hook.expect(Duration::from_secs(5), "webhook").json();
    assert_eq!(ev["event"], "backup_succeeded");
    assert_eq!(ev["file"].as_str(), run.file.as_deref());
    let mail = smtp.rx.recv_timeout(Duration::from_secs(5)).expect("mail");
    assert!(mail.data.contains("db backup succeeded"), "{}", mail.data);
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_and_ntfy_formats_reach_the_webhook() {
    let db = small_db("d_formats");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    for format in ["slack", "ntfy"] {
        let s = tool::settings(
            &db.name,
            dir.path(),
            &[
                ("NOTIFY_WEBHOOK_URL", &hook.url),
                ("NOTIFY_WEBHOOK_FORMAT", format),
                ("NOTIFY_ON_SUCCESS", "true"),
            ],
        );
        jobs(&s, tool::volume(dir.path()))
            .run_once(Kind::Db, Trigger::Schedule)
            .await;
        let req = hook.expect(Duration::from_secs(5), format);
        if format == "slack" {
            assert_eq!(req.header("content-type"), Some("application/json"));
            let text = req.json()["text"].as_str().unwrap().to_owned();
            assert!(
                text.starts_with(":white_check_mark: selmai-backup on "),
                "{text}"
            );
            assert!(text.contains("db backup succeeded"), "{text}");
        } else {
            assert!(req
                .header("content-type")
                .unwrap()
                .starts_with("text/plain"));
            assert!(req
                .header("title")
                .unwrap()
                .ends_with("db backup succeeded"));
            assert_eq!(req.header("priority"), Some("default"));
            assert!(req.body.contains("file: selmai_backup_"), "{}", req.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_alert_channel_never_fails_the_backup() {
    let db = small_db("d_alert_fails");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(500);
    let s = tool::settings(
        &db.name,
        dir.path(),
        &[
            ("NOTIFY_WEBHOOK_URL", &hook.url),
            ("NOTIFY_ON_SUCCESS", "true"),
            // Nothing listens there.
            ("NOTIFY_SMTP_HOST", "127.0.0.1"),
            ("NOTIFY_SMTP_PORT", &free_port().to_string()),
            ("NOTIFY_SMTP_TLS", "none"),
            ("NOTIFY_SMTP_FROM", "backup@example.org"),
            ("NOTIFY_SMTP_TO", "admin@example.org"),
        ],
    );
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    hook.expect(Duration::from_secs(5), "webhook");
    assert_eq!(backups(dir.path()).len(), 1);
}

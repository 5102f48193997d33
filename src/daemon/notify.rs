//! Alerts: a webhook (generic JSON, Slack-compatible or ntfy), mail over
//! SMTP, and healthchecks.io-style pings.
//!
//! Responsible for turning one [`Event`] into the body of each channel and
//! sending it with a short timeout. A channel that fails is logged and
//! reported in the return value; it never fails the backup it reports on.
//! Which events to send (failures always, successes on request) is decided
//! here too ([`Notifier::finished`]); when a backup runs is not.
//!
//! Pings (`NOTIFY_PING_URL`): `URL/start` when a scheduled database backup
//! starts, `URL` when it succeeds, `URL/fail` (with the error as the body)
//! when it fails: healthchecks.io's and Uptime Kuma's push conventions.
//! Pings go out on every outcome, since a dead man's switch needs the
//! successes.
//!
//! URLs are secrets (Slack's embed a token): they never appear in logs or
//! errors, `reqwest`'s errors are stripped of them.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

pub use crate::config::notify::{SmtpTls, WebhookFormat};
use crate::config::{NotifySettings, SmtpSettings};
use crate::daemon::schedule::Kind;
use crate::progress::human_bytes;

/// How long one alert may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The backup is stored everywhere it should be.
    BackupSucceeded,
    /// The backup is stored locally, but something needs attention (the
    /// off-site copy failed, retention could not delete). Always sent.
    BackupWarning,
    /// No backup was made. Always sent.
    BackupFailed,
}

impl EventKind {
    fn verb(self) -> &'static str {
        match self {
            EventKind::BackupSucceeded => "succeeded",
            EventKind::BackupWarning => "succeeded with warnings",
            EventKind::BackupFailed => "FAILED",
        }
    }
}

/// One alert, also the generic JSON body.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// Which kind of backup.
    pub kind: Kind,
    /// The backup's file name, when one was written.
    pub file: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Seconds the run took.
    pub duration: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// Problems that did not fail it.
    pub warnings: Vec<String>,
    /// The host (container) name, to tell several installations apart.
    pub host: String,
}

impl Event {
    /// One line: "selmai-backup on HOST: db backup FAILED: ...".
    pub fn title(&self) -> String {
        let what = match self.kind {
            Kind::Drill => "restore drill".to_owned(),
            k => format!("{k} backup"),
        };
        format!(
            "selmai-backup on {}: {what} {}",
            self.host,
            self.event.verb()
        )
    }

    /// A few lines for mail and chat.
    pub fn text(&self) -> String {
        let mut lines = vec![self.title()];
        if let Some(f) = &self.file {
            let size = self.size.map(|s| format!(" ({})", human_bytes(s)));
            lines.push(format!("file: {f}{}", size.unwrap_or_default()));
        }
        lines.push(format!("duration: {:.1}s", self.duration));
        if let Some(e) = &self.error {
            lines.push(format!("error: {e}"));
        }
        for w in &self.warnings {
            lines.push(format!("warning: {w}"));
        }
        lines.join("\n")
    }
}

/// The host name for alerts: `HOSTNAME` (Docker sets it), else the kernel's.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown-host".into())
}

/// A request to send: method POST, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

/// The webhook request for `event` in `format`.
pub fn webhook_request(event: &Event, format: WebhookFormat) -> WebhookRequest {
    match format {
        WebhookFormat::Json => WebhookRequest {
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_string(event).expect("an event serialises"),
        },
        WebhookFormat::Slack => {
            let icon = match event.event {
                EventKind::BackupSucceeded => ":white_check_mark:",
                EventKind::BackupWarning => ":warning:",
                EventKind::BackupFailed => ":x:",
            };
            WebhookRequest {
                content_type: "application/json",
                headers: Vec::new(),
                body: serde_json::json!({ "text": format!("{icon} {}", event.text()) }).to_string(),
            }
        }
        WebhookFormat::Ntfy => {
            let (priority, tags) = match event.event {
                EventKind::BackupSucceeded => ("default", "white_check_mark"),
                EventKind::BackupWarning => ("high", "warning"),
                EventKind::BackupFailed => ("urgent", "rotating_light"),
            };
            // Headers must be ASCII; the title is (host names are).
            let title: String = event
                .title()
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            WebhookRequest {
                content_type: "text/plain; charset=utf-8",
                headers: vec![
                    ("Title", title),
                    ("Priority", priority.into()),
                    ("Tags", tags.into()),
                ],
                body: event.text(),
            }
        }
    }
}

/// A channel that could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyFailure {
    /// "webhook", "mail" or "ping".
    pub channel: &'static str,
    /// Why (without the URL).
    pub error: String,
}

impl fmt::Display for NotifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} alert failed: {}", self.channel, self.error)
    }
}

/// Sends alerts on every configured channel.
#[derive(Debug, Clone)]
pub struct Notifier {
    settings: NotifySettings,
    http: reqwest::Client,
    host: String,
}

impl Notifier {
    /// A notifier for these settings.
    pub fn new(settings: NotifySettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("selmai-backup/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Notifier {
            settings,
            http,
            host: host_name(),
        }
    }

    /// The host name put in events.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A run of `kind` started: ping `/start` (database backups only, the
    /// dead man's switch watches the daily backup).
    pub async fn started(&self, kind: Kind) -> Vec<NotifyFailure> {
        match (&self.settings.ping, kind) {
            (Some(url), Kind::Db) => self
                .ping(
                    &format!("{}/start", url.expose().trim_end_matches('/')),
                    None,
                )
                .await
                .err()
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A run finished: ping, and alert when it failed, has warnings, or
    /// successes were asked for. Returns the channels that failed (already logged).
    pub async fn finished(&self, event: &Event) -> Vec<NotifyFailure> {
        let mut failures = Vec::new();
        if let (Some(url), Kind::Db) = (&self.settings.ping, event.kind) {
            let base = url.expose().trim_end_matches('/');
            let r = match event.event {
                EventKind::BackupFailed => {
                    self.ping(&format!("{base}/fail"), Some(event.text())).await
                }
                _ => self.ping(base, Some(event.text())).await,
            };
            failures.extend(r.err());
        }
        let wanted = event.event != EventKind::BackupSucceeded || self.settings.on_success;
        if !wanted {
            return failures;
        }
        if let Some(url) = &self.settings.webhook {
            let req = webhook_request(event, self.settings.webhook_format);
            failures.extend(self.webhook(url.expose(), req).await.err());
        }
        if let Some(smtp) = &self.settings.smtp {
            failures.extend(mail(smtp, event).await.err());
        }
        failures
    }

    async fn ping(&self, url: &str, body: Option<String>) -> Result<(), NotifyFailure> {
        let mut req = self.http.post(url);
        if let Some(b) = body {
            req = req.body(b);
        }
        send("ping", req).await
    }

    async fn webhook(&self, url: &str, r: WebhookRequest) -> Result<(), NotifyFailure> {
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, r.content_type);
        for (k, v) in r.headers {
            req = req.header(k, v);
        }
        send("webhook", req.body(r.body)).await
    }
}

async fn send(channel: &'static str, req: reqwest::RequestBuilder) -> Result<(), NotifyFailure> {
    let result = match req.send().await {
        Ok(resp) => match resp.error_for_status() {
            Ok(_) => Ok(()),
            Err(e) => Err(e.without_url().to_string()),
        },
        Err(e) => Err(e.without_url().to_string()),
    };
    result.map_err(|error| {
        tracing::warn!(channel, error = %error, "alert not delivered; the backup itself is not affected");
        NotifyFailure { channel, error }
    })
}

/// Send `event` as a mail.
async fn mail(smtp: &SmtpSettings, event: &Event) -> Result<(), NotifyFailure> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let result: Result<(), String> = async {
        let mut msg = Message::builder()
            .from(
                smtp.from
                    .parse()
                    .map_err(|e| format!("NOTIFY_SMTP_FROM: {e}"))?,
            )
            .subject(event.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &smtp.to {
            msg = msg.to(to.parse().map_err(|e| format!("NOTIFY_SMTP_TO: {e}"))?);
        }
        let msg = msg.body(event.text()).map_err(|e| e.to_string())?;
        let builder = match smtp.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                .map_err(|e| e.to_string())?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| e.to_string())?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        };
        let mut builder = builder.port(smtp.port).timeout(Some(TIMEOUT));
        if let (Some(user), Some(pw)) = (&smtp.user, &smtp.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
        }
        builder
            .build()
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    .await;
    result.map_err(|error| {
        tracing::warn!(channel = "mail", relay = %smtp.host, error = %error, "alert not delivered; the backup itself is not affected");
        NotifyFailure {
            channel: "mail",
            error: format!("{}:{}: {error}", smtp.host, smtp.port),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn event(kind: EventKind) -> Event {
        Event {
            event: kind,
            kind: Kind::Db,
            file: Some("selmai_backup_20250120_020000.sql.gz".into()),
            size: Some(2048),
            duration: 12.34,
            error: (kind == EventKind::BackupFailed).then(|| "database unreachable".into()),
            warnings: Vec::new(),
            host: "app1".into(),
        }
    }

    #[test]
    fn generic_json_has_the_documented_fields() {
        let r = webhook_request(&event(EventKind::BackupFailed), WebhookFormat::Json);
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["event"], "backup_failed");
        assert_eq!(v["kind"], "db");
        assert_eq!(v["file"], "selmai_backup_20250120_020000.sql.gz");
        assert_eq!(v["size"], 2048);
        assert_eq!(v["duration"], 12.34);
        assert_eq!(v["error"], "database unreachable");
        assert_eq!(v["host"], "app1");
    }

    #[test]
    fn slack_gets_a_text_field() {
        let r = webhook_request(&event(EventKind::BackupSucceeded), WebhookFormat::Slack);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(":white_check_mark: selmai-backup on app1: db backup succeeded"),
            "{text}"
        );
        assert!(
            text.contains("file: selmai_backup_20250120_020000.sql.gz (2.0 kB)"),
            "{text}"
        );
    }

    #[test]
    fn ntfy_gets_plain_text_and_headers() {
        let r = webhook_request(&event(EventKind::BackupFailed), WebhookFormat::Ntfy);
        assert!(r.content_type.starts_with("text/plain"));
        assert!(r.body.contains("error: database unreachable"));
        assert!(r
            .headers
            .contains(&("Title", "selmai-backup on app1: db backup FAILED".into())));
        assert!(r.headers.contains(&("Priority", "urgent".into())));
    }

    #[rstest]
    #[case("json", WebhookFormat::Json)]
    #[case("Slack", WebhookFormat::Slack)]
    #[case("ntfy", WebhookFormat::Ntfy)]
    fn formats_parse(#[case] s: &str, #[case] want: WebhookFormat) {
        assert_eq!(s.parse::<WebhookFormat>().unwrap(), want);
        assert!("teams".parse::<WebhookFormat>().is_err());
    }

    #[rstest]
    #[case("starttls", SmtpTls::Starttls, 587)]
    #[case("tls", SmtpTls::Tls, 465)]
    #[case("none", SmtpTls::None, 25)]
    fn smtp_tls_modes(#[case] s: &str, #[case] want: SmtpTls, #[case] port: u16) {
        let got: SmtpTls = s.parse().unwrap();
        assert_eq!((got, got.default_port()), (want, port));
        assert!("maybe".parse::<SmtpTls>().is_err());
    }
}

//! The alert formats the configuration parses (`NOTIFY_WEBHOOK_FORMAT`,
//! `NOTIFY_SMTP_TLS`). Sending alerts is [`crate::daemon::notify`], which
//! re-exports them.

use std::str::FromStr;

/// `NOTIFY_WEBHOOK_FORMAT`: the body the webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// `{"event", "kind", "file", "size", "duration", "error", ...}`.
    #[default]
    Json,
    /// `{"text": "..."}` (Slack, Mattermost, Rocket.Chat, Discord's /slack).
    Slack,
    /// ntfy: the message as plain text, with Title, Priority and Tags headers.
    Ntfy,
}

impl FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(WebhookFormat::Json),
            "slack" => Ok(WebhookFormat::Slack),
            "ntfy" => Ok(WebhookFormat::Ntfy),
            _ => Err(format!("{s:?}: use json, slack or ntfy")),
        }
    }
}

/// `NOTIFY_SMTP_TLS`: how the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text, for a relay on the same host or network (port 25).
    None,
}

impl SmtpTls {
    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

impl FromStr for SmtpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "starttls" => Ok(SmtpTls::Starttls),
            "tls" | "ssl" => Ok(SmtpTls::Tls),
            "none" | "off" => Ok(SmtpTls::None),
            _ => Err(format!("{s:?}: use starttls, tls or none")),
        }
    }
}

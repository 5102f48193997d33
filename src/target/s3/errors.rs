//! Turning a failed request into one line that says what happened and
//! what to do: the server's code and message, the variable to check.

use std::time::Duration;

use s3::error::S3Error;

use super::LABEL;
use crate::target::TargetError;

/// A request that failed for good: the last error and the attempts made.
pub(super) struct Failed {
    pub(super) error: S3Error,
    pub(super) attempts: u32,
}

/// What an error message needs to know about the target.
pub(super) struct ErrorContext<'a> {
    pub(super) endpoint: &'a str,
    pub(super) bucket: &'a str,
    pub(super) prefix: &'a str,
    pub(super) timeout: Duration,
    pub(super) path_style: bool,
}

pub(super) fn status_of(e: &S3Error) -> Option<u16> {
    match e {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        _ => None,
    }
}

pub(super) fn error_code_of(e: &S3Error) -> Option<&str> {
    match e {
        S3Error::HttpFailWithBody(_, body) => xml_field(body, "Code"),
        _ => None,
    }
}

/// Whether the host name of a request could not be resolved: a typo in
/// `S3_ENDPOINT`, or a bucket name put in front of a host that only
/// answers by its own name. Retrying does not help.
pub(super) fn is_dns_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = one_line(e).to_ascii_lowercase();
    text.contains("dns error") || text.contains("failed to lookup address")
}

/// Whether `endpoint` (`scheme://host[:port][/...]`) needs path-style
/// addressing: an IP address, or a host name without a dot (`minio`,
/// `localhost`), cannot take the bucket name in front of it.
pub(super) fn needs_path_style(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return true; // an IPv6 literal
    }
    let host = host_port.split(':').next().unwrap_or("");
    host.parse::<std::net::Ipv4Addr>().is_ok() || !host.contains('.')
}

/// What a server said about a refused request that points at the
/// credentials rather than at the permissions: the secret (a bad
/// signature) or the key id (unknown to the server). Garage, for one,
/// answers both with `AccessDenied` and says which in the message.
pub(super) fn credential_problem(code: &str, message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    match code {
        "SignatureDoesNotMatch" => Some("check S3_SECRET_ACCESS_KEY (and S3_ACCESS_KEY_ID)"),
        "InvalidAccessKeyId" => Some("check S3_ACCESS_KEY_ID (and S3_SECRET_ACCESS_KEY)"),
        "InvalidToken" | "ExpiredToken" | "InvalidSecurity" => {
            Some("check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY")
        }
        _ if m.contains("signature") => Some("check S3_SECRET_ACCESS_KEY (and S3_ACCESS_KEY_ID)"),
        _ if m.contains("no such key")
            || m.contains("unknown key")
            || m.contains("access key")
            || m.contains("key id") =>
        {
            Some("check S3_ACCESS_KEY_ID (and S3_SECRET_ACCESS_KEY)")
        }
        _ => None,
    }
}

/// The text of the first `<tag>` element of an S3 error document.
pub(super) fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find("</")?;
    Some(body[start..start + len].trim())
}

/// An error and its causes on one line (reqwest hides the cause otherwise).
pub(super) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Turn a failed request into an error that says what to do.
pub(super) fn describe(
    ctx: &ErrorContext<'_>,
    action: &'static str,
    name: &str,
    f: &Failed,
) -> TargetError {
    let name = name.to_owned();
    let tries = if f.attempts > 1 {
        format!(" (after {} attempts)", f.attempts)
    } else {
        String::new()
    };
    let bucket = ctx.bucket;
    let endpoint = ctx.endpoint;
    let remote = |detail: String| TargetError::Remote {
        target: LABEL,
        action,
        name: name.clone(),
        detail,
    };
    let denied = |detail: String| TargetError::Denied {
        target: LABEL,
        name: name.clone(),
        detail,
    };
    match &f.error {
        S3Error::HttpFailWithBody(status, body) => {
            let code = xml_field(body, "Code").unwrap_or("");
            let message = xml_field(body, "Message").unwrap_or("");
            // The server's own words, kept in every 403 message.
            let said = match (code, message) {
                ("", "") => format!("HTTP {status}"),
                (c, "") => c.to_string(),
                ("", m) => format!("HTTP {status}: {m}"),
                (c, m) => format!("{c}: {m}"),
            };
            match (*status, code) {
                (404, "NoSuchBucket") => remote(format!(
                    "bucket {bucket} does not exist at {endpoint}: create it or fix S3_BUCKET"
                )),
                (404, "NoSuchKey" | "") => TargetError::NotFound {
                    target: LABEL,
                    name,
                },
                (403 | 401, _) if credential_problem(code, message).is_some() => {
                    denied(format!(
                        "{endpoint} rejected the credentials ({said}): {}",
                        credential_problem(code, message).unwrap_or_default()
                    ))
                }
                (403, "RequestTimeTooSkewed") => denied(format!(
                    "the clock of this host differs too much from {endpoint}'s ({said}): synchronise it (NTP)"
                )),
                (403, _) if action == "deleting" => denied(format!(
                    "the credentials may upload but not delete under {bucket}/{} ({said}): old backups stay in the bucket; grant s3:DeleteObject on that prefix, or expire them with a lifecycle rule",
                    ctx.prefix
                )),
                (403, _) => denied(format!(
                    "access denied in bucket {bucket} at {endpoint} ({said}): the credentials need s3:ListBucket, s3:GetObject, s3:PutObject and s3:AbortMultipartUpload on the prefix {:?} (see the policy example in the README)",
                    ctx.prefix
                )),
                (_, "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
                | (301, _) => {
                    let hint = xml_field(body, "Region")
                        .map(|r| format!("set S3_REGION={r}"))
                        .unwrap_or_else(|| "check S3_REGION and S3_ENDPOINT".into());
                    remote(format!(
                        "bucket {bucket} is not in this region or endpoint ({}): {hint}",
                        if code.is_empty() { "HTTP 301" } else { code }
                    ))
                }
                (_, "InvalidBucketName") => remote(format!(
                    "{bucket:?} is not a valid bucket name: fix S3_BUCKET"
                )),
                (_, "InvalidStorageClass") => remote(format!(
                    "{endpoint} does not accept this storage class: fix S3_STORAGE_CLASS ({message})"
                )),
                _ => {
                    let what = match (code, message) {
                        ("", _) => format!("HTTP {status}"),
                        (c, "") => format!("HTTP {status} {c}"),
                        (c, m) => format!("HTTP {status} {c}: {m}"),
                    };
                    remote(format!("{endpoint} answered {what}{tries}"))
                }
            }
        }
        S3Error::Reqwest(r) if r.is_timeout() => remote(format!(
            "no answer from {endpoint} within {} s{tries}: check the network, or raise S3_REQUEST_TIMEOUT",
            ctx.timeout.as_secs()
        )),
        S3Error::Reqwest(r) if is_dns_failure(r) => {
            let hint = if ctx.path_style {
                String::new()
            } else {
                format!(
                    "; requests go to {bucket}.<host>: if the service only answers by its own name, set S3_PATH_STYLE=true"
                )
            };
            remote(format!(
                "cannot resolve the host of {endpoint} ({}): check S3_ENDPOINT{hint}",
                one_line(r)
            ))
        }
        S3Error::Reqwest(r) if r.is_connect() => remote(format!(
            "cannot connect to {endpoint}{tries} ({}): check S3_ENDPOINT and the network",
            one_line(r)
        )),
        e => remote(format!("{}{tries}", one_line(e))),
    }
}

#[cfg(test)]
/// A failed request as S3 words it, for tests.
pub(super) fn http(status: u16, code: &str) -> Failed {
    Failed {
        error: S3Error::HttpFailWithBody(
            status,
            format!(
                "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>msg</Message></Error>"
            ),
        ),
        attempts: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rstest::rstest;

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            endpoint: "https://s3.example.net",
            bucket: "backups",
            prefix: "prod/",
            timeout: Duration::from_secs(120),
            path_style: false,
        }
    }

    #[test]
    fn missing_bucket_says_what_to_do() {
        let e = describe(&ctx(), "listing", "prod/", &http(404, "NoSuchBucket")).to_string();
        assert!(
            e.contains("bucket backups does not exist at https://s3.example.net")
                && e.contains("S3_BUCKET"),
            "{e}"
        );
    }

    #[rstest]
    #[case("InvalidAccessKeyId")]
    #[case("SignatureDoesNotMatch")]
    fn bad_credentials_name_the_variables(#[case] code: &str) {
        let e = describe(&ctx(), "uploading", "x", &http(403, code));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(
            e.contains("S3_ACCESS_KEY_ID") && e.contains("S3_SECRET_ACCESS_KEY"),
            "{e}"
        );
    }

    fn http_said(status: u16, code: &str, message: &str) -> Failed {
        Failed {
            error: S3Error::HttpFailWithBody(
                status,
                format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>"),
            ),
            attempts: 1,
        }
    }

    // Garage answers AccessDenied for a bad secret and for an unknown key
    // id, and says which in the message; AWS has codes of their own.
    #[rstest]
    #[case("AccessDenied", "Forbidden: Invalid signature", "S3_SECRET_ACCESS_KEY")]
    #[case(
        "AccessDenied",
        "Forbidden: No such key: GK31c2f218a2e44f485b94239e",
        "S3_ACCESS_KEY_ID"
    )]
    #[case(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match",
        "S3_SECRET_ACCESS_KEY"
    )]
    #[case(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist",
        "S3_ACCESS_KEY_ID"
    )]
    fn rejected_credentials_keep_the_servers_words(
        #[case] code: &str,
        #[case] message: &str,
        #[case] variable: &str,
    ) {
        let e = describe(&ctx(), "listing", "prod/", &http_said(403, code, message));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(e.contains(&format!("{code}: {message}")), "{e}");
        assert!(e.contains(&format!("check {variable}")), "{e}");
        assert!(!e.contains("s3:ListBucket"), "{e}");
    }

    #[test]
    fn a_policy_denial_keeps_the_servers_words_and_lists_the_permissions() {
        let f = http_said(403, "AccessDenied", "Access Denied by bucket policy");
        let e = describe(&ctx(), "uploading", "x", &f).to_string();
        assert!(
            e.contains("AccessDenied: Access Denied by bucket policy")
                && e.contains("s3:PutObject")
                && !e.contains("S3_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let e = describe(&ctx(), "deleting", "x", &f).to_string();
        assert!(
            e.contains("AccessDenied: Access Denied by bucket policy") && e.contains("not delete"),
            "{e}"
        );
    }

    #[rstest]
    #[case("http://127.0.0.1:9000", true)]
    #[case("http://minio:9000", true)]
    #[case("http://localhost:9000/", true)]
    #[case("http://[::1]:9000", true)]
    #[case("https://garage", true)]
    #[case("https://s3.fr-par.scw.cloud", false)]
    #[case("https://minio.internal:9000", false)]
    #[case("https://user@s3.example.net", false)]
    fn path_style_is_chosen_for_hosts_that_need_it(#[case] endpoint: &str, #[case] path: bool) {
        assert_eq!(needs_path_style(endpoint), path);
    }

    #[test]
    fn delete_denied_is_its_own_message() {
        let e = describe(&ctx(), "deleting", "x", &http(403, "AccessDenied"));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(
            e.contains("may upload but not delete") && e.contains("s3:DeleteObject"),
            "{e}"
        );
        let e = describe(&ctx(), "uploading", "x", &http(403, "AccessDenied")).to_string();
        assert!(
            e.contains("s3:PutObject") && !e.contains("not delete"),
            "{e}"
        );
    }

    #[test]
    fn head_404_is_not_found() {
        let f = Failed {
            error: S3Error::HttpFailWithBody(404, String::new()),
            attempts: 1,
        };
        assert!(matches!(
            describe(&ctx(), "opening", "x", &f),
            TargetError::NotFound { .. }
        ));
    }

    #[test]
    fn wrong_region_names_the_right_one() {
        let f = Failed {
            error: S3Error::HttpFailWithBody(
                400,
                "<Error><Code>AuthorizationHeaderMalformed</Code><Message>m</Message><Region>eu-west-3</Region></Error>".into(),
            ),
            attempts: 1,
        };
        let e = describe(&ctx(), "listing", "", &f).to_string();
        assert!(e.contains("S3_REGION=eu-west-3"), "{e}");
    }

    #[test]
    fn other_errors_carry_code_message_and_attempts() {
        let mut f = http(500, "InternalError");
        f.attempts = 6;
        let e = describe(&ctx(), "uploading a part of", "x", &f).to_string();
        assert!(
            e.contains("HTTP 500 InternalError: msg") && e.contains("after 6 attempts"),
            "{e}"
        );
    }

    #[test]
    fn xml_fields_are_found() {
        let body = "<Error><Code>NoSuchKey</Code><Message>The key</Message></Error>";
        assert_eq!(xml_field(body, "Code"), Some("NoSuchKey"));
        assert_eq!(xml_field(body, "Message"), Some("The key"));
        assert_eq!(xml_field(body, "Region"), None);
        assert_eq!(xml_field("", "Code"), None);
    }
}

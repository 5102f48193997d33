//! Retrying a request with exponential back-off while the failure is
//! one that waiting can fix (5xx, timeouts, dropped connections); never
//! DNS failures or refused credentials.

use std::future::Future;
use std::time::Duration;

use s3::error::S3Error;

use super::errors::{is_dns_failure, one_line, xml_field, Failed};

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// Extra attempts after the first.
    pub(super) retries: u32,
    /// Wait before the first retry; doubled each time, capped at [`crate::target::MAX_BACKOFF`].
    pub(super) first_delay: Duration,
}

impl RetryPolicy {
    /// Wait before retry number `retry` (1-based).
    pub(super) fn delay(&self, retry: u32) -> Duration {
        crate::target::backoff(self.first_delay, retry)
    }
}

/// Run `op` until it succeeds, fails for good, or retries run out.
pub(super) async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S3Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(error) if attempt <= policy.retries && is_transient(&error) => {
                let wait = policy.delay(attempt);
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %one_line(&error),
                    "bucket: {what} failed, retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(Failed {
                    error,
                    attempts: attempt,
                })
            }
        }
    }
}

/// Whether a failed request may succeed if sent again.
pub(super) fn is_transient(e: &S3Error) -> bool {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                || matches!(
                    xml_field(body, "Code"),
                    Some(
                        "InternalError"
                            | "ServiceUnavailable"
                            | "SlowDown"
                            | "RequestTimeout"
                            | "BadDigest"
                            | "XAmzContentSHA256Mismatch"
                            | "IncompleteBody"
                    )
                )
        }
        // Connection refused or reset, timeouts, a body cut short: worth
        // another try. A request we could not even build, or a host name
        // that does not resolve, will fail the same way every time.
        S3Error::Reqwest(r) => !r.is_builder() && !is_dns_failure(r),
        S3Error::Io(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::s3::errors::http;
    use rstest::rstest;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            first_delay: Duration::from_millis(500),
        };
        let d: Vec<u64> = (1..=4).map(|r| p.delay(r).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000]);
        assert_eq!(p.delay(20), crate::target::MAX_BACKOFF);
        assert_eq!(p.delay(u32::MAX), crate::target::MAX_BACKOFF);
    }

    #[rstest]
    #[case(500, "InternalError", true)]
    #[case(503, "SlowDown", true)]
    #[case(502, "", true)]
    #[case(429, "", true)]
    #[case(400, "RequestTimeout", true)]
    #[case(400, "BadDigest", true)]
    #[case(200, "InternalError", true)] // CompleteMultipartUpload's 200-with-error
    #[case(403, "AccessDenied", false)]
    #[case(404, "NoSuchBucket", false)]
    #[case(400, "InvalidArgument", false)]
    #[case(501, "NotImplemented", false)]
    fn transient_errors_are_retried(#[case] status: u16, #[case] code: &str, #[case] t: bool) {
        assert_eq!(is_transient(&http(status, code).error), t);
    }

    #[test]
    fn io_errors_are_transient() {
        let e = S3Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(is_transient(&e));
    }
}

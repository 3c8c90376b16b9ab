//! Retry policy: capped exponential backoff with full jitter, a budget per request, the
//! receiver's `Retry-After`/`RetryInfo` honoured, and retries cut short at shutdown.

use std::{
    hash::{BuildHasher as _, RandomState},
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use super::{
    config::RetrySettings,
    service::{ExportRequest, ExportResponse, OtlpSignal},
};
use crate::{export::ExportError, telemetry::ExportHandle};

/// The backoff cap before attempt `retry + 1`: `initial * 2^retry`, at most `max`.
pub fn backoff_cap(settings: &RetrySettings, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    settings
        .initial_backoff
        .saturating_mul(factor)
        .min(settings.max_backoff)
}

/// A uniformly random duration in `[0, cap]` ("full jitter").
pub fn full_jitter(cap: Duration) -> Duration {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| AtomicU64::new(RandomState::new().hash_one(Instant::now())));
    // splitmix64 over a shared counter: lock-free, different for every call.
    let mut z = state
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    #[expect(clippy::cast_precision_loss, reason = "53 random bits are plenty")]
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(unit)
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Set once at shutdown: no retry may sleep past this instant.
pub type Deadline = Arc<OnceLock<Instant>>;

/// The tower retry policy of the OTLP exporters. Cloned per request by `tower::retry`; the
/// attempt count and first-attempt time live in the request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    settings: RetrySettings,
    stats: ExportHandle,
    deadline: Deadline,
}

impl RetryPolicy {
    /// A policy counting its retries in `stats`.
    pub fn new(settings: RetrySettings, stats: ExportHandle, deadline: Deadline) -> Self {
        Self {
            settings,
            stats,
            deadline,
        }
    }

    /// The delay before the next attempt after `error`, or `None` to give up.
    pub fn next_delay(
        &self,
        error: &ExportError,
        retries_so_far: u32,
        first_attempt: Instant,
        now: Instant,
    ) -> Option<Duration> {
        if !self.settings.enabled || !error.is_retryable() {
            return None;
        }
        let delay = error
            .retry_after()
            .unwrap_or_else(|| full_jitter(backoff_cap(&self.settings, retries_so_far)));
        let elapsed = now.saturating_duration_since(first_attempt);
        if elapsed + delay > self.settings.max_elapsed {
            return None;
        }
        if self.deadline.get().is_some_and(|d| now + delay > *d) {
            return None;
        }
        Some(delay)
    }
}

impl<P: OtlpSignal> tower::retry::Policy<ExportRequest<P>, ExportResponse, ExportError>
    for RetryPolicy
{
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        req: &mut ExportRequest<P>,
        result: &mut Result<ExportResponse, ExportError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let delay = self.next_delay(error, req.retries, req.first_attempt, Instant::now())?;
        req.retries += 1;
        self.stats.inc_retries();
        tracing::debug!(
            retries = req.retries,
            delay_ms = delay.as_millis(),
            %error,
            "Retrying OTLP export."
        );
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, req: &ExportRequest<P>) -> Option<ExportRequest<P>> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Exporter, Signal};

    fn settings() -> RetrySettings {
        RetrySettings {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }

    fn policy() -> RetryPolicy {
        let metrics = Arc::new(crate::telemetry::SelfMetrics::default());
        let stats = ExportHandle::new(metrics, Exporter::OtlpGrpc, Signal::Traces);
        RetryPolicy::new(settings(), stats, Deadline::default())
    }

    fn grpc(code: tonic::Code) -> ExportError {
        ExportError::Grpc {
            code,
            message: String::new(),
            retry_after: None,
        }
    }

    fn http(status: u16) -> ExportError {
        ExportError::HttpStatus {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn retryable_grpc_codes() {
        use tonic::Code;
        let table = [
            (Code::Ok, false),
            (Code::Cancelled, true),
            (Code::Unknown, false),
            (Code::InvalidArgument, false),
            (Code::DeadlineExceeded, true),
            (Code::NotFound, false),
            (Code::AlreadyExists, false),
            (Code::PermissionDenied, false),
            (Code::ResourceExhausted, true),
            (Code::FailedPrecondition, false),
            (Code::Aborted, true),
            (Code::OutOfRange, true),
            (Code::Unimplemented, false),
            (Code::Internal, false),
            (Code::Unavailable, true),
            (Code::DataLoss, true),
            (Code::Unauthenticated, false),
        ];
        for (code, retry) in table {
            assert_eq!(grpc(code).is_retryable(), retry, "{code:?}");
        }
    }

    #[test]
    fn client_side_grpc_failures_are_transport_errors() {
        let made_by_tonic = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(made_by_tonic.code(), tonic::Code::Unknown);
        let error = ExportError::from_status(&made_by_tonic);
        assert!(
            matches!(error, ExportError::GrpcTransport { .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
        let sent_by_server = tonic::Status::unknown("boom");
        assert!(!ExportError::from_status(&sent_by_server).is_retryable());
    }

    #[test]
    fn retryable_http_statuses() {
        for status in [400, 401, 403, 404, 408, 413, 500, 501] {
            assert!(!http(status).is_retryable(), "{status}");
        }
        for status in [429, 502, 503, 504] {
            assert!(http(status).is_retryable(), "{status}");
        }
        let timeout = ExportError::Timeout {
            timeout: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable());
        let config = ExportError::InvalidSetting {
            option: "x",
            reason: "y",
        };
        assert!(!config.is_retryable());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = settings();
        let caps: Vec<_> = (0..8).map(|n| backoff_cap(&s, n).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff_cap(&s, u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_the_cap_and_varies() {
        let cap = Duration::from_millis(400);
        let samples: Vec<_> = (0..1000).map(|_| full_jitter(cap)).collect();
        assert!(samples.iter().all(|d| *d <= cap));
        let low = samples.iter().filter(|d| **d < cap / 2).count();
        assert!(
            (350..650).contains(&low),
            "{low} of 1000 below half the cap"
        );
    }

    #[test]
    fn delays_follow_the_policy() {
        let p = policy();
        let t0 = Instant::now();
        let d = p
            .next_delay(&grpc(tonic::Code::Unavailable), 3, t0, t0)
            .unwrap();
        assert!(d <= Duration::from_millis(800));
        assert_eq!(
            p.next_delay(&grpc(tonic::Code::InvalidArgument), 0, t0, t0),
            None
        );
        // The receiver's delay wins over the backoff.
        let asked = ExportError::HttpStatus {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            p.next_delay(&asked, 0, t0, t0),
            Some(Duration::from_secs(7))
        );
        // ... unless it would exceed the budget.
        let late = t0 + Duration::from_secs(4);
        assert_eq!(p.next_delay(&asked, 0, t0, late), None);
        let over = t0 + Duration::from_secs(11);
        assert_eq!(p.next_delay(&http(503), 0, t0, over), None);
    }

    #[test]
    fn shutdown_deadline_cuts_retries() {
        let p = policy();
        let t0 = Instant::now();
        p.deadline.set(t0 + Duration::from_millis(50)).unwrap();
        let asked = ExportError::HttpStatus {
            status: 503,
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(p.next_delay(&asked, 0, t0, t0), None);
    }

    #[test]
    fn disabled_retries_never_retry() {
        let mut p = policy();
        p.settings.enabled = false;
        let t0 = Instant::now();
        assert_eq!(p.next_delay(&http(503), 0, t0, t0), None);
    }

    #[test]
    fn retry_after_parsing() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_mins(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

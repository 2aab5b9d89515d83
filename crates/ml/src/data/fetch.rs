//! Fetching one image URL over HTTP(S), as img2dataset does: bounded time, bounded size, a few
//! retries with exponential backoff for failures that may pass, none for those that will not.
//!
//! - One attempt — DNS, connect, TLS, request, redirects and the whole body — must finish within
//!   `timeout`, so a slow or trickling server holds a worker for at most that long.
//! - A body longer than `max_bytes` is abandoned as soon as that is known: from its
//!   `Content-Length` before reading, or after `max_bytes + 1` bytes otherwise. Nothing beyond
//!   that is ever buffered.
//! - Retried: timeouts, refused or reset connections, 5xx, 429 and 408. Not retried: other 4xx,
//!   unknown hosts, TLS failures, bad URLs, too many redirects, oversized bodies.
//! - Redirects are followed, at most `max_redirects` of them.
//! - With `respect_opt_out`, a response whose `X-Robots-Tag` says `noai`, `noimageai`, `noindex`
//!   or `noimageindex` (to everyone, or to `vlmflow`) is refused, as img2dataset does by default.

use std::time::{Duration, Instant};

use ureq::http::Response;

/// The user-agent token `X-Robots-Tag` directives may address (`X-Robots-Tag: vlmflow: noai`).
pub const USER_AGENT_TOKEN: &str = "vlmflow";

/// `X-Robots-Tag` directives that opt an image out of dataset collection.
const OPT_OUT_DIRECTIVES: [&str; 4] = ["noai", "noimageai", "noindex", "noimageindex"];

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The time one attempt may take, redirects and body included.
    pub timeout: Duration,
    /// Attempts after the first, for failures that may pass.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one (at most 10 s).
    pub backoff: Duration,
    /// The largest body accepted.
    pub max_bytes: u64,
    pub max_redirects: u32,
    pub user_agent: String,
    pub respect_opt_out: bool,
    /// Idle connections kept for reuse (per host as well): about the number of workers.
    pub connections: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(500),
            max_bytes: 20 << 20,
            max_redirects: 5,
            user_agent: default_user_agent(),
            respect_opt_out: true,
            connections: 16,
        }
    }
}

/// `vlmflow/<version>`.
pub fn default_user_agent() -> String {
    format!("{USER_AGENT_TOKEN}/{}", env!("CARGO_PKG_VERSION"))
}

/// Why a URL gave no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("invalid HTTP response: {0}")]
    Protocol(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("host not found")]
    HostNotFound,
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("bad URL: {0}")]
    BadUrl(String),
    #[error("opted out of dataset collection (X-Robots-Tag: {0})")]
    OptedOut(String),
}

impl FetchError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Status(code) => *code >= 500 || *code == 429 || *code == 408,
            FetchError::Timeout(_) | FetchError::Connection(_) => true,
            _ => false,
        }
    }
}

/// A fetched body and how many attempts it took.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub attempts: u32,
}

/// The last attempt's error and how many attempts were made.
#[derive(Debug)]
pub struct Failed {
    pub error: FetchError,
    pub attempts: u32,
}

/// A connection pool and its settings, shared by all workers.
pub struct Fetcher {
    agent: ureq::Agent,
    config: FetchConfig,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(config.max_redirects)
            .user_agent(config.user_agent.as_str())
            .max_idle_connections(config.connections.max(1))
            .max_idle_connections_per_host(config.connections.max(1))
            .build()
            .new_agent();
        Fetcher { agent, config }
    }

    /// GET `url`, retrying what may pass. `stop` is asked before each retry (and during the
    /// wait before it): once it says true, the last error is returned at once.
    pub fn get(&self, url: &str, stop: &dyn Fn() -> bool) -> Result<Fetched, Failed> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(url) {
                Ok(bytes) => return Ok(Fetched { bytes, attempts }),
                Err(error) => {
                    let last = attempts > self.config.retries || !error.retryable();
                    if last || !self.wait(attempts, stop) {
                        return Err(Failed { error, attempts });
                    }
                }
            }
        }
    }

    /// Wait before retry number `retry` (1-based); false if `stop` said so meanwhile.
    fn wait(&self, retry: u32, stop: &dyn Fn() -> bool) -> bool {
        let factor = 1u32 << (retry - 1).min(16);
        let until = Instant::now() + self.config.backoff.saturating_mul(factor).min(MAX_BACKOFF);
        loop {
            if stop() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    fn attempt(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let classify = |e| classify(e, self.config.timeout);
        let mut response = self.agent.get(url).call().map_err(classify)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        if self.config.respect_opt_out
            && let Some(tag) = opt_out(&response)
        {
            return Err(FetchError::OptedOut(tag));
        }
        let limit = self.config.max_bytes;
        if response.body().content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge { limit },
                e => classify(e),
            })
    }
}

/// The `X-Robots-Tag` value that opts this response out, if one does. A value is either
/// `directive, directive…` (for everyone) or `agent: directive, …` (for one user agent).
fn opt_out<B>(response: &Response<B>) -> Option<String> {
    response
        .headers()
        .get_all("x-robots-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|value| {
            let (agent, directives) = match value.split_once(':') {
                Some((agent, rest)) => (Some(agent.trim()), rest),
                None => (None, *value),
            };
            agent.is_none_or(|a| a.eq_ignore_ascii_case(USER_AGENT_TOKEN))
                && directives.split(',').any(|d| {
                    OPT_OUT_DIRECTIVES
                        .iter()
                        .any(|o| d.trim().eq_ignore_ascii_case(o))
                })
        })
        .map(str::to_string)
}

fn classify(error: ureq::Error, timeout: Duration) -> FetchError {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Timeout(_) => FetchError::Timeout(timeout),
        ureq::Error::Io(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            FetchError::Timeout(timeout)
        }
        ureq::Error::Io(e) => FetchError::Connection(e.to_string()),
        ureq::Error::ConnectionFailed => FetchError::Connection("no address answered".into()),
        ureq::Error::HostNotFound => FetchError::HostNotFound,
        ureq::Error::BadUri(s) => FetchError::BadUrl(s),
        ureq::Error::Http(e) => FetchError::BadUrl(e.to_string()),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => FetchError::TooManyRedirects,
        ureq::Error::StatusCode(code) => FetchError::Status(code),
        ureq::Error::BodyExceedsLimit(limit) => FetchError::TooLarge { limit },
        e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_)) => FetchError::Tls(e.to_string()),
        e @ (ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..)) => {
            FetchError::Protocol(e.to_string())
        }
        e => FetchError::Connection(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(tags: &[&str]) -> Response<()> {
        let mut builder = Response::builder();
        for tag in tags {
            builder = builder.header("X-Robots-Tag", *tag);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn opt_out_reads_x_robots_tag_like_img2dataset() {
        assert_eq!(opt_out(&response(&[])), None);
        assert_eq!(opt_out(&response(&["nofollow"])), None);
        assert_eq!(
            opt_out(&response(&["nofollow", "noarchive, NoAI"])).as_deref(),
            Some("noarchive, NoAI")
        );
        assert!(opt_out(&response(&["vlmflow: noimageai"])).is_some());
        assert_eq!(opt_out(&response(&["otherbot: noindex"])), None);
        assert_eq!(opt_out(&response(&["unavailable_after: 2030-01-01"])), None);
    }

    #[test]
    fn what_is_retried() {
        for (error, retry) in [
            (FetchError::Status(500), true),
            (FetchError::Status(503), true),
            (FetchError::Status(429), true),
            (FetchError::Status(408), true),
            (FetchError::Status(404), false),
            (FetchError::Status(403), false),
            (FetchError::Timeout(Duration::from_secs(1)), true),
            (FetchError::Connection("reset".into()), true),
            (FetchError::HostNotFound, false),
            (FetchError::TooLarge { limit: 1 }, false),
            (FetchError::BadUrl("x".into()), false),
            (FetchError::Tls("bad certificate".into()), false),
            (FetchError::TooManyRedirects, false),
        ] {
            assert_eq!(error.retryable(), retry, "{error}");
        }
    }

    #[test]
    fn bad_urls_fail_at_once_without_retries() {
        let fetcher = Fetcher::new(FetchConfig {
            retries: 3,
            ..FetchConfig::default()
        });
        for url in ["", "not a url", "ftp://example.com/a.png", "http://"] {
            let failed = fetcher.get(url, &|| false).unwrap_err();
            assert_eq!(failed.attempts, 1, "{url}: {:?}", failed.error);
            assert!(
                matches!(failed.error, FetchError::BadUrl(_)),
                "{url}: {:?}",
                failed.error
            );
        }
    }
}

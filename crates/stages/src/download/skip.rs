//! Why a remote image was skipped, and the counts a download reports as metrics.

use std::collections::BTreeMap;

use vlmflow_ml::data::fetch::FetchError;
use vlmflow_ml::data::thumbnail::ThumbnailError;

/// A reason to skip a row; each is counted in the metric [`Skip::metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Skip {
    /// A non-2xx status (after retries, for 5xx/429/408), too many redirects, or a response
    /// that is not valid HTTP.
    HttpError,
    Timeout,
    /// A body over `max_bytes`, or an image too large to decode safely.
    TooLarge,
    /// Bytes that are not a PNG, JPEG or WebP image, or a corrupt one.
    NotAnImage,
    /// Refused or reset connections, unknown hosts, TLS failures.
    Connection,
    /// Not an http(s) URL.
    BadUrl,
    /// `X-Robots-Tag: noai` and the like, with `respect_opt_out`.
    OptedOut,
}

impl Skip {
    pub(super) const ALL: [Skip; 7] = [
        Skip::HttpError,
        Skip::Timeout,
        Skip::TooLarge,
        Skip::NotAnImage,
        Skip::Connection,
        Skip::BadUrl,
        Skip::OptedOut,
    ];

    pub(super) fn metric(self) -> &'static str {
        match self {
            Skip::HttpError => "skipped_http_error",
            Skip::Timeout => "skipped_timeout",
            Skip::TooLarge => "skipped_too_large",
            Skip::NotAnImage => "skipped_not_an_image",
            Skip::Connection => "skipped_connection",
            Skip::BadUrl => "skipped_bad_url",
            Skip::OptedOut => "skipped_opted_out",
        }
    }

    pub(super) fn of_fetch(error: &FetchError) -> Skip {
        match error {
            FetchError::Status(_) | FetchError::TooManyRedirects | FetchError::Protocol(_) => {
                Skip::HttpError
            }
            FetchError::Timeout(_) => Skip::Timeout,
            FetchError::TooLarge { .. } => Skip::TooLarge,
            FetchError::Connection(_) | FetchError::HostNotFound | FetchError::Tls(_) => {
                Skip::Connection
            }
            FetchError::BadUrl(_) => Skip::BadUrl,
            FetchError::OptedOut(_) => Skip::OptedOut,
        }
    }

    pub(super) fn of_image(error: &ThumbnailError) -> Skip {
        match error {
            ThumbnailError::TooLarge(_) => Skip::TooLarge,
            ThumbnailError::NotAnImage(_) | ThumbnailError::Encode(_) => Skip::NotAnImage,
        }
    }
}

/// Running counts of a download.
#[derive(Debug, Default)]
pub(super) struct Tally {
    fetched: u64,
    /// Images kept from an interrupted run and not fetched again.
    pub(super) resumed: u64,
    skipped: BTreeMap<Skip, u64>,
    /// Attempts beyond each row's first.
    pub(super) retried: u64,
    /// Bytes downloaded for the images kept.
    pub(super) bytes: u64,
    /// Failures counted but not logged.
    pub(super) unlogged: u64,
}

impl Tally {
    pub(super) fn fetched(&mut self, bytes: u64, attempts: u32) {
        self.fetched += 1;
        self.bytes += bytes;
        self.retried += u64::from(attempts.saturating_sub(1));
    }

    pub(super) fn skip(&mut self, reason: Skip, attempts: u32) {
        *self.skipped.entry(reason).or_default() += 1;
        self.retried += u64::from(attempts.saturating_sub(1));
    }

    pub(super) fn ok(&self) -> u64 {
        self.fetched + self.resumed
    }

    pub(super) fn skipped(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub(super) fn done(&self) -> u64 {
        self.ok() + self.skipped()
    }

    pub(super) fn count(&self, reason: Skip) -> u64 {
        self.skipped.get(&reason).copied().unwrap_or(0)
    }

    /// `skipped_http_error 3, skipped_timeout 1`, or `nothing skipped`.
    pub(super) fn skip_summary(&self) -> String {
        if self.skipped.is_empty() {
            return "nothing skipped".into();
        }
        self.skipped
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason.metric()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_summary() {
        let mut t = Tally::default();
        assert_eq!(t.skip_summary(), "nothing skipped");
        t.fetched(100, 2);
        t.resumed += 1;
        t.skip(Skip::Timeout, 3);
        t.skip(Skip::HttpError, 1);
        t.skip(Skip::HttpError, 1);
        assert_eq!((t.ok(), t.skipped(), t.done()), (2, 3, 5));
        assert_eq!((t.retried, t.bytes), (3, 100));
        assert_eq!(t.count(Skip::HttpError), 2);
        assert_eq!(t.count(Skip::BadUrl), 0);
        assert_eq!(t.skip_summary(), "skipped_http_error 2, skipped_timeout 1");
    }

    #[test]
    fn every_reason_has_its_own_metric() {
        let mut names: Vec<_> = Skip::ALL.iter().map(|s| s.metric()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Skip::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("skipped_")));
    }
}

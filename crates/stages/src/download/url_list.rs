//! The `url-list` source: a CSV/TSV/JSONL list of image URLs and captions, fetched concurrently
//! with a timeout, retries and a size limit, shrunk and re-encoded on the way in; failures are
//! skipped, counted by reason and logged (what img2dataset does).
//!
//! The artifact is a function of which rows succeeded and what they served: row `i` of the list
//! becomes `images/{i:08}.png` (or `.jpg`), `captions.jsonl` follows the list's order, and nothing
//! depends on thread timing or the clock. Fetched images are kept in the run's checkpoint folder
//! until the run succeeds, so a build interrupted halfway resumes where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::skip::{Skip, Tally};
use super::write_index;
use crate::StageContext;
use crate::shared::inputs::require_input;
use vlmflow_ml::data::captions::CaptionRecord;
use vlmflow_ml::data::fetch::{FetchConfig, Fetcher, default_user_agent};
use vlmflow_ml::data::thumbnail::{Encoding, thumbnail};
use vlmflow_ml::data::url_list::{Columns, UrlRow, read_url_list};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UrlListParams {
    /// The URL list, workspace-relative (`.csv`, `.tsv`/`.txt` or `.jsonl`/`.json`); it must be
    /// listed in the stage's `inputs`.
    urls: String,
    /// The column (or JSON key) holding each image's URL.
    #[serde(default = "default_url_column")]
    url_column: String,
    /// The column (or JSON key) holding each image's caption.
    #[serde(default = "default_caption_column")]
    caption_column: String,
    /// A column holding a class label, for data with classes (written to `classes.json`).
    #[serde(default)]
    label_column: Option<String>,
    /// Downloads in flight at once (threads; the work is waiting on the network, not the CPU).
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    /// Seconds one attempt may take: DNS, connect, TLS, redirects and the whole body.
    #[serde(default = "default_timeout_secs")]
    timeout_secs: f64,
    /// Further attempts after a timeout, a connection failure, a 5xx, 429 or 408, waiting 0.5 s,
    /// 1 s, 2 s… between them. Other failures are not retried.
    #[serde(default = "default_retries")]
    retries: u32,
    /// The largest download accepted, in bytes; a longer body is abandoned once this is exceeded.
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    /// Shrink so the shorter side is at most this many pixels, keeping the aspect ratio; 0 keeps
    /// the original size. Smaller images are never enlarged.
    #[serde(default = "default_image_size")]
    image_size: u32,
    /// `png` (lossless) or `jpeg`: how images are re-encoded. Always 8-bit RGB.
    #[serde(default = "default_image_format")]
    image_format: String,
    /// JPEG quality, 1–100, when `image_format = "jpeg"`.
    #[serde(default = "default_jpeg_quality")]
    jpeg_quality: u8,
    /// The `User-Agent` header sent; by default `vlmflow/<version>`.
    #[serde(default)]
    user_agent: Option<String>,
    /// Skip images whose response carries `X-Robots-Tag: noai` (or `noimageai`, `noindex`,
    /// `noimageindex`), for everyone or for `vlmflow`, as img2dataset does by default.
    #[serde(default = "default_respect_opt_out")]
    respect_opt_out: bool,
}

fn default_url_column() -> String {
    "url".into()
}
fn default_caption_column() -> String {
    "caption".into()
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout_secs() -> f64 {
    10.0
}
fn default_retries() -> u32 {
    2
}
fn default_max_bytes() -> u64 {
    20 << 20
}
fn default_image_size() -> u32 {
    256
}
fn default_image_format() -> String {
    "png".into()
}
fn default_jpeg_quality() -> u8 {
    95
}
fn default_respect_opt_out() -> bool {
    true
}

/// Redirects followed before giving up on a URL.
const MAX_REDIRECTS: u32 = 5;

/// Failures logged one by one; later ones are only counted.
const LOGGED_FAILURES: u64 = 100;

/// What the workers share.
struct Job<'a> {
    ctx: &'a StageContext<'a>,
    rows: &'a [UrlRow],
    fetcher: Fetcher,
    image_size: u32,
    encoding: Encoding,
    /// Fetched images wait here (in the checkpoint folder) until the run succeeds.
    staging: PathBuf,
    next: AtomicUsize,
    abort: AtomicBool,
}

/// What became of one row.
enum Outcome {
    Fetched {
        bytes: u64,
        attempts: u32,
    },
    /// Fetched by an earlier, interrupted run with the same key.
    Resumed,
    Skipped {
        reason: Skip,
        message: String,
        attempts: u32,
    },
}

pub(super) fn run(ctx: &StageContext<'_>, p: UrlListParams) -> anyhow::Result<()> {
    let (fetch, encoding) = settings(ctx, &p)?;
    require_input(ctx, &p.urls)?;
    let columns = Columns {
        url: &p.url_column,
        caption: &p.caption_column,
        label: p.label_column.as_deref(),
    };
    let rows = read_url_list(&ctx.workspace.join(&p.urls), &columns)
        .with_context(|| format!("stage `{}`: reading the URL list", ctx.stage))?;
    if rows.is_empty() {
        bail!(
            "stage `{}`: the URL list {} has no rows: add `{}` and `{}` rows below its header",
            ctx.stage,
            p.urls,
            p.url_column,
            p.caption_column
        );
    }
    let staging = ctx.checkpoint_dir.join("images");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let job = Job {
        ctx,
        rows: &rows,
        fetcher: Fetcher::new(fetch),
        image_size: p.image_size,
        encoding,
        staging,
        next: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
    };
    let (ok, tally) = fetch_all(&job, p.concurrency)?;
    record_metrics(ctx, &tally);
    if ctx.interrupted() {
        bail!(
            "stage `{}` interrupted after {} of {} URLs; the {} images fetched are kept, and the \
             next build of this stage resumes from them",
            ctx.stage,
            tally.done(),
            rows.len(),
            tally.ok()
        );
    }
    if tally.ok() == 0 {
        bail!(
            "stage `{}`: none of the {} URLs in {} gave an image ({}): see each failure with \
             `vlmflow log {} --verbose`",
            ctx.stage,
            rows.len(),
            p.urls,
            tally.skip_summary(),
            ctx.stage
        );
    }
    let records = publish(&job, &ok)?;
    write_index(ctx.out_dir, &records)?;
    let resumed = match tally.resumed {
        0 => String::new(),
        n => format!(" ({n} kept from an interrupted run)"),
    };
    ctx.log(&format!(
        "{} of {} URLs in {} gave images{resumed}; {}",
        tally.ok(),
        rows.len(),
        p.urls,
        tally.skip_summary()
    ));
    Ok(())
}

/// Check the params and turn them into fetch settings and an encoding.
fn settings(ctx: &StageContext<'_>, p: &UrlListParams) -> anyhow::Result<(FetchConfig, Encoding)> {
    let fail = |what: String| {
        anyhow::anyhow!(
            "stage `{}`: {what}: fix the stage's params file or inline table",
            ctx.stage
        )
    };
    if !(1..=1024).contains(&p.concurrency) {
        return Err(fail(format!(
            "`concurrency` must be 1 to 1024, not {}",
            p.concurrency
        )));
    }
    if !(p.timeout_secs.is_finite() && p.timeout_secs > 0.0 && p.timeout_secs <= 86_400.0) {
        return Err(fail(format!(
            "`timeout_secs` must be more than 0 and at most 86400, not {}",
            p.timeout_secs
        )));
    }
    if p.max_bytes == 0 {
        return Err(fail("`max_bytes` must be at least 1".into()));
    }
    let encoding = match p.image_format.as_str() {
        "png" => Encoding::Png,
        "jpeg" | "jpg" if (1..=100).contains(&p.jpeg_quality) => Encoding::Jpeg {
            quality: p.jpeg_quality,
        },
        "jpeg" | "jpg" => {
            return Err(fail(format!(
                "`jpeg_quality` must be 1 to 100, not {}",
                p.jpeg_quality
            )));
        }
        other => {
            return Err(fail(format!(
                "unknown `image_format` \"{other}\": expected \"png\" or \"jpeg\""
            )));
        }
    };
    let fetch = FetchConfig {
        timeout: Duration::from_secs_f64(p.timeout_secs),
        retries: p.retries,
        max_bytes: p.max_bytes,
        max_redirects: MAX_REDIRECTS,
        user_agent: p.user_agent.clone().unwrap_or_else(default_user_agent),
        respect_opt_out: p.respect_opt_out,
        connections: p.concurrency,
        ..FetchConfig::default()
    };
    Ok((fetch, encoding))
}

/// Fetch every row on `concurrency` threads. Returns which rows gave an image (by index) and
/// the counts; a failure to write an image stops everything and is the error.
fn fetch_all(job: &Job<'_>, concurrency: usize) -> anyhow::Result<(Vec<bool>, Tally)> {
    let total = job.rows.len();
    let mut ok = vec![false; total];
    let mut tally = Tally::default();
    let mut fatal = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..concurrency.min(total) {
            let tx = tx.clone();
            scope.spawn(move || worker(job, &tx));
        }
        drop(tx);
        for (i, outcome) in rx {
            match outcome {
                Ok(outcome) => {
                    ok[i] = matches!(outcome, Outcome::Fetched { .. } | Outcome::Resumed);
                    note(job, i, outcome, &mut tally);
                }
                Err(e) if fatal.is_none() => {
                    job.abort.store(true, Ordering::SeqCst);
                    fatal = Some(e);
                }
                Err(_) => {}
            }
            job.ctx.progress(
                tally.done(),
                Some(total as u64),
                &format!("fetching: {} ok, {} skipped", tally.ok(), tally.skipped()),
            );
        }
    });
    if let Some(e) = fatal {
        return Err(e.context(format!("stage `{}`", job.ctx.stage)));
    }
    if tally.unlogged > 0 {
        job.ctx.log(&format!(
            "… and {} more failures, counted but not logged",
            tally.unlogged
        ));
    }
    Ok((ok, tally))
}

fn worker(job: &Job<'_>, tx: &mpsc::Sender<(usize, anyhow::Result<Outcome>)>) {
    while !stopping(job) {
        let i = job.next.fetch_add(1, Ordering::SeqCst);
        if i >= job.rows.len() || tx.send((i, fetch_one(job, i))).is_err() {
            return;
        }
    }
}

fn stopping(job: &Job<'_>) -> bool {
    job.ctx.interrupted() || job.abort.load(Ordering::SeqCst)
}

/// The file name of row `i` in `images/`.
fn image_name(i: usize, encoding: Encoding) -> String {
    format!("{i:08}.{}", encoding.extension())
}

/// Fetch, shrink, encode and stage one row. Errors are only for what stops the whole stage
/// (the disk); a bad URL or image is an `Outcome::Skipped`.
fn fetch_one(job: &Job<'_>, i: usize) -> anyhow::Result<Outcome> {
    let name = image_name(i, job.encoding);
    let staged = job.staging.join(&name);
    if staged.is_file() {
        return Ok(Outcome::Resumed);
    }
    let fetched = match job.fetcher.get(&job.rows[i].url, &|| stopping(job)) {
        Ok(fetched) => fetched,
        Err(failed) => {
            return Ok(Outcome::Skipped {
                reason: Skip::of_fetch(&failed.error),
                message: failed.error.to_string(),
                attempts: failed.attempts,
            });
        }
    };
    let image = match thumbnail(&fetched.bytes, job.image_size, job.encoding) {
        Ok(image) => image,
        Err(e) => {
            return Ok(Outcome::Skipped {
                reason: Skip::of_image(&e),
                message: e.to_string(),
                attempts: fetched.attempts,
            });
        }
    };
    // Written whole, then renamed: a file in the staging folder is always a complete image.
    let part = job.staging.join(format!("{name}.part"));
    std::fs::write(&part, &image.bytes).with_context(|| format!("writing {}", part.display()))?;
    std::fs::rename(&part, &staged).with_context(|| format!("writing {}", staged.display()))?;
    Ok(Outcome::Fetched {
        bytes: fetched.bytes.len() as u64,
        attempts: fetched.attempts,
    })
}

/// Count one outcome, and log it if it is one of the first failures.
fn note(job: &Job<'_>, i: usize, outcome: Outcome, tally: &mut Tally) {
    match outcome {
        Outcome::Fetched { bytes, attempts } => tally.fetched(bytes, attempts),
        Outcome::Resumed => tally.resumed += 1,
        Outcome::Skipped {
            reason,
            message,
            attempts,
        } => {
            tally.skip(reason, attempts);
            if tally.skipped() <= LOGGED_FAILURES {
                let row = &job.rows[i];
                let tries = if attempts == 1 { "attempt" } else { "attempts" };
                job.ctx.log(&format!(
                    "skipped row {i} (line {}) {}: {message} [{}] after {attempts} {tries}",
                    row.line,
                    row.url,
                    reason.metric()
                ));
            } else {
                tally.unlogged += 1;
            }
        }
    }
}

fn record_metrics(ctx: &StageContext<'_>, tally: &Tally) {
    ctx.metric("images_ok", None, tally.ok() as f64);
    ctx.metric("images_skipped", None, tally.skipped() as f64);
    for reason in Skip::ALL {
        ctx.metric(reason.metric(), None, tally.count(reason) as f64);
    }
    ctx.metric("images_resumed", None, tally.resumed as f64);
    ctx.metric("attempts_retried", None, tally.retried as f64);
    ctx.metric("bytes_fetched", None, tally.bytes as f64);
}

/// Move the staged images of the rows that succeeded into the artifact; their records, in list
/// order.
fn publish(job: &Job<'_>, ok: &[bool]) -> anyhow::Result<Vec<CaptionRecord>> {
    let images = job.ctx.out_dir.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let mut records = Vec::new();
    for (i, row) in job.rows.iter().enumerate().filter(|(i, _)| ok[*i]) {
        let name = image_name(i, job.encoding);
        move_file(&job.staging.join(&name), &images.join(&name))?;
        records.push(CaptionRecord {
            image: format!("images/{name}"),
            caption: row.caption.clone(),
            label: row.label.clone(),
            qa: Vec::new(),
            split: None,
        });
    }
    Ok(records)
}

/// Rename, or copy where the two folders are on different file systems.
fn move_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

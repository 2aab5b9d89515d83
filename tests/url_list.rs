//! The `url-list` source of the `download` kind against an HTTP/1.1 server the test runs on
//! 127.0.0.1: good PNGs, a JPEG to shrink, a redirect, a 500 that passes on retry, and every way
//! a URL can fail — 404, a timeout, bodies over `max_bytes` (declared and streamed), bytes that are
//! not an image, a refused connection, a bad URL, an `X-Robots-Tag: noai` opt-out.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Run, Ws};
use image::{ImageFormat, Rgb, RgbImage};

/// A tiny HTTP/1.1 server: one thread per connection, one request per connection.
struct Server {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve(stream, &counter));
            }
        });
        Server { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests received for `path`.
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn serve(mut stream: TcpStream, hits: &Mutex<HashMap<String, usize>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let nth = {
        let mut hits = hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let s = &mut stream;
    match path.as_str() {
        p if p.starts_with("/png/") => reply(s, "200 OK", "", &png(p[5..].parse().unwrap())),
        "/big.jpg" => reply(
            s,
            "200 OK",
            "",
            &encoded(&gradient(400, 300), ImageFormat::Jpeg),
        ),
        "/flaky" if nth == 1 => reply(s, "500 Internal Server Error", "", b"try again"),
        "/flaky" => reply(s, "200 OK", "", &png(3)),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            reply(s, "200 OK", "", &png(4));
        }
        "/huge-declared" => reply(s, "200 OK", "", &vec![7u8; 300_000]),
        "/huge-streamed" => {
            // No Content-Length: the client only learns the size by reading.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            for _ in 0..64 {
                if s.write_all(&[9u8; 16 * 1024]).is_err() {
                    return;
                }
            }
        }
        "/garbage" => reply(
            s,
            "200 OK",
            "Content-Type: text/html\r\n",
            b"<html>gone</html>",
        ),
        "/redirect" => reply(s, "302 Found", "Location: /png/7\r\n", b""),
        "/optout" => reply(s, "200 OK", "X-Robots-Tag: noai, noimageai\r\n", &png(12)),
        "/hang" if nth == 1 => {
            std::thread::sleep(Duration::from_millis(1500));
            reply(s, "503 Service Unavailable", "", b"");
        }
        "/hang" => reply(s, "200 OK", "", &png(8)),
        _ => reply(s, "404 Not Found", "", b"no such image"),
    }
}

fn reply(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 100]))
}

fn encoded(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A 40×30 PNG of one colour, different for each `n`.
fn png(n: u8) -> Vec<u8> {
    encoded(
        &RgbImage::from_pixel(40, 30, Rgb([n * 20, 255 - n * 20, 50])),
        ImageFormat::Png,
    )
}

/// `vlmflow ARGS` with no proxy settings, so 127.0.0.1 is reached directly.
fn vlmflow(ws: &Ws, args: &[&str]) -> std::process::Command {
    let mut cmd = ws.command(args);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn build(ws: &Ws, args: &[&str]) -> Run {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = vlmflow(ws, &all).output().expect("run vlmflow");
    Run {
        args: all.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn metric(ws: &Ws, name: &str) -> f64 {
    let rows = ws.query(&format!(
        "SELECT m.value FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
         WHERE s.stage = 'download' AND m.name = '{name}'"
    ));
    rows.first()
        .and_then(|r| r["value"].as_f64())
        .unwrap_or_else(|| panic!("no metric {name}: {rows:?}"))
}

/// A workspace downloading `rows` (url, caption, label) listed in `data/urls.tsv`.
fn workspace(params: &str, rows: &[(String, &str, &str)]) -> Ws {
    let ws = Ws::new(&format!(
        r#"
[stages.download]
kind = "download"
inputs = ["data/urls.tsv"]
params = {{ source = "url-list", urls = "data/urls.tsv", {params} }}
"#
    ));
    let mut tsv = String::from("url\tcaption\tlabel\n");
    for (url, caption, label) in rows {
        tsv.push_str(&format!("{url}\t{caption}\t{label}\n"));
    }
    ws.write("data/urls.tsv", &tsv);
    ws
}

/// Every file of the download's artifact and its bytes.
fn artifact(ws: &Ws) -> BTreeMap<PathBuf, Vec<u8>> {
    ws.files_under("out/download")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn fetches_shrinks_retries_and_counts_every_kind_of_failure() {
    let server = Server::start();
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/x.png", listener.local_addr().unwrap())
    };
    let u = |p: &str| server.url(p);
    let rows = vec![
        (u("/png/0"), "a green square", "square"),  // 0 ok
        (u("/missing"), "gone", "square"),          // 1 skipped_http_error
        (u("/big.jpg"), "a big gradient", "photo"), // 2 ok, shrunk to 85×64
        (u("/flaky"), "after a retry", "square"),   // 3 ok on the second attempt
        (u("/slow"), "too slow", "square"),         // 4 skipped_timeout
        (u("/huge-declared"), "big", "square"),     // 5 skipped_too_large
        (u("/garbage"), "html", "square"),          // 6 skipped_not_an_image
        (u("/redirect"), "moved", "square"),        // 7 ok via /png/7
        (u("/huge-streamed"), "bigger", "square"),  // 8 skipped_too_large
        (u("/png/1"), "another", "square"),         // 9 ok
        (refused, "nobody there", "square"),        // 10 skipped_connection
        ("not a url".to_string(), "bad", "square"), // 11 skipped_bad_url
        (u("/optout"), "no AI please", "square"),   // 12 skipped_opted_out
        (u("/png/2"), "the last one", "square"),    // 13 ok
    ];
    let ws = workspace(
        "label_column = \"label\", concurrency = 8, timeout_secs = 1, retries = 1, \
         max_bytes = 200000, image_size = 64",
        &rows,
    );
    let run = build(&ws, &[]);
    run.assert_code(0);

    for (name, want) in [
        ("images_ok", 6.0),
        ("images_skipped", 8.0),
        ("skipped_http_error", 1.0),
        ("skipped_timeout", 1.0),
        ("skipped_too_large", 2.0),
        ("skipped_not_an_image", 1.0),
        ("skipped_connection", 1.0),
        ("skipped_bad_url", 1.0),
        ("skipped_opted_out", 1.0),
        ("images_resumed", 0.0),
        // /flaky, /slow and the refused connection were each tried twice; the 404 once.
        ("attempts_retried", 3.0),
    ] {
        assert_eq!(metric(&ws, name), want, "{name}\n{run}");
    }
    assert_eq!(server.hits("/flaky"), 2);
    assert_eq!(server.hits("/slow"), 2, "a timeout is retried");
    assert_eq!(server.hits("/missing"), 1, "a 404 is not retried");
    assert_eq!(server.hits("/huge-declared"), 1);
    assert_eq!(server.hits("/png/7"), 1, "the redirect was followed");

    // Named by row, in list order; the JPEG was shrunk to a 64-px short side, the small PNGs
    // kept their size, and everything is stored as PNG.
    let images: Vec<String> = ws
        .files_under("out/download/images")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected = [
        "00000000", "00000002", "00000003", "00000007", "00000009", "00000013",
    ];
    assert_eq!(
        images,
        expected.map(|i| format!("{i}.png")).to_vec(),
        "{run}"
    );
    let dims = |i: &str| image::image_dimensions(ws.path(&format!("out/download/images/{i}.png")));
    assert_eq!(dims("00000002").unwrap(), (85, 64));
    assert_eq!(dims("00000000").unwrap(), (40, 30));
    let redirected = image::open(ws.path("out/download/images/00000007.png")).unwrap();
    assert_eq!(redirected.to_rgb8().get_pixel(0, 0), &Rgb([140, 115, 50]));

    let captions: Vec<serde_json::Value> = ws
        .read("out/download/captions.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed: Vec<(&str, &str)> = captions
        .iter()
        .map(|c| (c["image"].as_str().unwrap(), c["caption"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("images/00000000.png", "a green square"),
            ("images/00000002.png", "a big gradient"),
            ("images/00000003.png", "after a retry"),
            ("images/00000007.png", "moved"),
            ("images/00000009.png", "another"),
            ("images/00000013.png", "the last one"),
        ]
    );
    assert_eq!(captions[1]["label"], "photo");
    let classes: Vec<String> = serde_json::from_str(&ws.read("out/download/classes.json")).unwrap();
    assert_eq!(classes, ["photo", "square"]);

    let log = ws.run(&["log", "download", "--verbose"]);
    for needle in [
        "/missing: HTTP status 404 [skipped_http_error] after 1 attempt",
        "/slow: timed out",
        "/optout: opted out",
        "not a url: bad URL",
    ] {
        assert!(log.stdout.contains(needle), "log lacks {needle:?}\n{log}");
    }

    // The artifact depends on what succeeded, not on timing: a forced refetch is byte-identical.
    let first = artifact(&ws);
    build(&ws, &["--force", "download"]).assert_code(0);
    assert_eq!(artifact(&ws), first);
    assert_eq!(server.hits("/png/0"), 2);
}

#[test]
fn when_nothing_can_be_fetched_the_stage_fails_and_says_why() {
    let server = Server::start();
    let ws = workspace(
        "timeout_secs = 1",
        &[
            (server.url("/missing"), "gone", "x"),
            (server.url("/garbage"), "html", "x"),
            (server.url("/also-missing"), "gone too", "x"),
        ],
    );
    let run = build(&ws, &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.status_of("download"), "failed", "{run}");
    for needle in [
        "none of the 3 URLs in data/urls.tsv gave an image",
        "skipped_http_error 2, skipped_not_an_image 1",
        "vlmflow log download --verbose",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?}\n{run}");
    }
    assert!(
        !ws.exists("out/download"),
        "a failed stage leaves no artifact"
    );
    assert_eq!(metric_of_last_run(&ws, "skipped_http_error"), 2.0);
}

/// A metric of the latest run (failed runs have no stage_state row).
fn metric_of_last_run(ws: &Ws, name: &str) -> f64 {
    let rows = ws.query(&format!(
        "SELECT value FROM metrics WHERE name = '{name}' \
         AND run_id = (SELECT max(id) FROM runs)"
    ));
    rows.first()
        .and_then(|r| r["value"].as_f64())
        .unwrap_or_else(|| panic!("no metric {name}: {rows:?}"))
}

#[test]
fn an_interrupted_download_resumes_without_refetching() {
    let server = Server::start();
    let ws = workspace(
        "concurrency = 1, timeout_secs = 5, image_format = \"jpeg\"",
        &[
            (server.url("/png/1"), "first", "x"),
            (server.url("/hang"), "second", "x"),
        ],
    );
    let args = ["build"];
    let child = vlmflow(&ws, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.hits("/hang") == 0 {
        assert!(
            Instant::now() < deadline,
            "the second URL was never requested"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    common::signal(child.id() as i32, libc::SIGINT);
    let stopped = Run::wait(child, &args, Duration::from_secs(20));
    stopped.assert_code(130);
    assert_eq!(stopped.status_of("download"), "interrupted", "{stopped}");
    assert!(!ws.exists("out/download"));

    let resumed = build(&ws, &[]);
    resumed.assert_code(0);
    assert_eq!(metric(&ws, "images_ok"), 2.0, "{resumed}");
    assert_eq!(metric(&ws, "images_resumed"), 1.0, "{resumed}");
    assert_eq!(
        server.hits("/png/1"),
        1,
        "the first image was not fetched again"
    );
    assert_eq!(server.hits("/hang"), 2);
    assert!(ws.exists("out/download/images/00000000.jpg"));
    assert!(ws.exists("out/download/images/00000001.jpg"));
}

#[test]
fn the_list_must_be_an_input_and_bad_params_and_columns_are_named() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
params = { source = "url-list", urls = "urls.tsv" }
"#,
    );
    ws.write("urls.tsv", "url\tcaption\nhttp://127.0.0.1:9/a.png\ta\n");
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("not among its `inputs`"), "{run}");

    let ws = workspace("image_format = \"gif\"", &[]);
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("unknown `image_format` \"gif\""),
        "{run}"
    );

    let ws = workspace("url_column = \"link\"", &[]);
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("urls.tsv:1: the header") && run.stdout.contains("no `link` column"),
        "{run}"
    );

    let ws = workspace("", &[]);
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("has no rows"), "{run}");
}

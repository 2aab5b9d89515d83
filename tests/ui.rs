//! `vlmflow ui` in a real browser: Debian's Chromium, headless, loads each view of a workspace
//! with real runs (a small language model trained twice, a stage that fails, one made stale)
//! and the test reads what the page drew — the DAG's nodes and their states, the runs table, a
//! run's params, curves, files and lineage, two runs' curves overlaid with their differing params
//! marked. With VLMFLOW_UI_SCREENSHOTS=DIR each view's screenshot is saved there (the README's
//! come from docs/ui/).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::Ws;

const STAGES: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 120, seed = 2 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 8, batch_size = 16, lr = 2e-3, warmup_steps = 2 }

[stages.report]
kind = "cmd"
cmd = "echo report > report.txt"
needs = ["lm-train"]
outs = ["report.txt"]

[stages.broken]
kind = "cmd"
cmd = "echo 'no GPU here' >&2; exit 3"
outs = ["never.txt"]
"#;

/// A running `vlmflow ui` and its address; killed when dropped.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    fn start(ws: &Ws) -> Ui {
        let mut child = ws
            .command(&["ui", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vlmflow ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium(args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            // Let the page fetch /api/ and draw before the DOM is taken.
            "--virtual-time-budget=8000",
        ])
        .args(args)
        .output()
        .expect("chromium (Debian's `chromium` package; .ci/run installs it)")
}

/// The page at `url` as the browser drew it (its DOM after its scripts ran), and a screenshot
/// of it when asked for.
fn drawn(url: &str, name: &str) -> String {
    if let Ok(dir) = std::env::var("VLMFLOW_UI_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        let shot = format!("--screenshot={dir}/{name}.png");
        let out = chromium(&[&shot, "--window-size=1360,900", url]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = chromium(&["--dump-dom", url]);
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(
        !dom.contains(r#"class="error""#),
        "{url} shows an error:\n{dom}"
    );
    dom
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[test]
fn every_view_draws_the_workspace_in_a_browser() {
    let ws = Ws::new(STAGES);
    ws.build(&["--keep-going"]).assert_code(1);
    ws.build_ok(&["lm-train", "--set", "lm-train.lr=5e-3"]);
    // A param edited since: lm-train (and what needs it) is stale.
    ws.stagefile(&STAGES.replace("steps = 8", "steps = 9"));
    let runs_before = ws.run_count();
    let builds_before = ws.query_i64("SELECT count(*) FROM builds");

    let ui = Ui::start(&ws);
    // A second dashboard on the same workspace at the same time is fine.
    let other = Ui::start(&ws);
    assert_ne!(ui.url, other.url);

    let dag = drawn(&format!("{}/dag", ui.url), "dag");
    for (stage, state) in [
        ("download", "fresh"),
        ("preprocess", "fresh"),
        ("lm-train", "stale"),
        ("report", "stale"),
        ("broken", "failed"),
    ] {
        assert!(
            dag.contains(&format!(r#"data-stage="{stage}" data-state="{state}""#)),
            "{stage} should be drawn {state}:\n{dag}"
        );
    }
    assert_eq!(count(&dag, r#"class="edge""#), 3, "{dag}");
    assert!(
        dag.contains("params.steps 8 → 9"),
        "the reason is shown:\n{dag}"
    );
    assert!(
        dag.contains("no GPU here") || dag.contains("exited with"),
        "{dag}"
    );

    let table = drawn(&format!("{}/runs", ui.url), "runs");
    assert_eq!(
        count(&table, "<tr data-run="),
        runs_before as usize,
        "{table}"
    );
    assert!(table.contains("lr=0.005"), "{table}");

    let lm: Vec<i64> = ws
        .query("SELECT id FROM runs WHERE stage = 'lm-train' ORDER BY id")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(lm.len(), 2);
    let run = drawn(&format!("{}/runs/{}", ui.url, lm[1]), "run");
    assert!(
        run.contains(r#"<tr data-key="lr"><td>lr</td><td>0.005</td></tr>"#),
        "{run}"
    );
    assert!(
        run.contains(r#"data-title="train.loss""#),
        "a loss curve:\n{run}"
    );
    assert!(
        run.contains(r#"<img src="/api/runs/"#) && run.contains("loss.svg"),
        "{run}"
    );
    // The lineage goes back to the raw data: download and preprocess runs are drawn.
    for stage in ["download", "preprocess"] {
        let id = ws.query_i64(&format!("SELECT max(id) FROM runs WHERE stage = '{stage}'"));
        assert!(
            run.contains(&format!(r#"class="node" data-run="{id}""#)),
            "{run}"
        );
    }
    assert!(run.contains("lm-train"), "the log is shown");

    let compare = drawn(
        &format!("{}/compare?ids={},{}", ui.url, lm[0], lm[1]),
        "compare",
    );
    for id in &lm {
        // A drawn line (`d="M…"`) for the run, in the train.loss chart among others.
        let line = format!(r#"data-run="{id}"><title>#{id} lm-train</title></path>"#);
        assert!(
            count(&compare, &line) >= 2 && compare.contains(r#"<path class="series" d="M"#),
            "run {id}'s curves:\n{compare}"
        );
    }
    assert!(
        compare.contains(r#"<tr class="differs" data-key="lr">"#),
        "the differing param is marked:\n{compare}"
    );
    assert!(
        compare.contains(r#"<tr data-key="steps">"#),
        "equal params are not marked:\n{compare}"
    );

    // The second dashboard answers too, and neither wrote a run or a build.
    let other_dag = drawn(&format!("{}/", other.url), "other");
    assert!(other_dag.contains(r#"data-stage="broken""#));
    assert_eq!(ws.run_count(), runs_before);
    assert_eq!(ws.query_i64("SELECT count(*) FROM builds"), builds_before);
}

/// A sweep opens whole in the compare view: its trials listed, its varied stage's runs overlaid;
/// the runs view offers it.
#[test]
fn a_sweep_opens_whole_in_the_compare_view() {
    let stages = STAGES.split("[stages.report]").next().unwrap();
    let ws = Ws::new(stages);
    ws.build_ok(&[]);
    ws.run(&["sweep", "lm-train.lr=2e-3,5e-3", "--name", "lrs"])
        .assert_code(0);
    let lm: Vec<i64> = ws
        .query("SELECT id FROM runs WHERE stage = 'lm-train' ORDER BY id")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(lm.len(), 2);
    let ui = Ui::start(&ws);

    let runs = drawn(&format!("{}/runs", ui.url), "runs-sweeps");
    assert!(
        runs.contains(r#"<option value="lrs">lrs: 2 trials of lm-train.lr=2e-3,5e-3</option>"#),
        "{runs}"
    );
    let compare = drawn(&format!("{}/compare?sweep=lrs", ui.url), "sweep");
    assert!(
        compare.contains("Sweep lrs: 2 trials of lm-train.lr=2e-3,5e-3"),
        "{compare}"
    );
    assert_eq!(count(&compare, "<tr data-trial="), 2, "{compare}");
    for (trial, id) in lm.iter().enumerate() {
        let line = format!(
            r#"data-run="{id}"><title>#{id} lm-train (trial {})</title></path>"#,
            trial + 1
        );
        assert!(count(&compare, &line) >= 2, "run {id}'s curves:\n{compare}");
    }
    assert!(
        compare.contains(r#"<tr class="differs" data-key="lr">"#),
        "{compare}"
    );
}

/// `GET url` over a plain socket: the body, as JSON.
fn get_json(url: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// While a stage trains, the DAG draws it running and its curve grows between two looks.
#[test]
fn a_training_stage_is_seen_running_and_its_curve_grows() {
    let ws = Ws::new(&STAGES.replace("steps = 8", "steps = 4000"));
    ws.build_ok(&["preprocess"]);
    let ui = Ui::start(&ws);
    let mut build = ws.spawn(&["build", "lm-train"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run = loop {
        let stages = get_json(&format!("{}/api/stages", ui.url));
        let lm = stages["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "lm-train")
            .unwrap()
            .clone();
        if lm["state"] == "running" {
            break lm["latest"]["id"].as_i64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never running: {lm}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let steps = || {
        get_json(&format!("{}/api/runs/{run}/series", ui.url))["train.loss"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // Metrics reach the database every 2 s.
    let mut first = steps();
    while first == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics while running"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        first = steps();
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let later = steps();
    assert!(later > first, "the curve grew: {first} → {later} steps");
    let dag = drawn(&format!("{}/dag", ui.url), "running");
    assert!(
        dag.contains(r#"data-stage="lm-train" data-state="running""#),
        "{dag}"
    );
    unsafe { libc::kill(build.id() as i32, libc::SIGINT) };
    let status = build.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

/// The chat view: a bundle listed, and a question about an image posted as the page posts it,
/// answered as a stream with what `vlmflow chat` answers.
#[test]
fn the_chat_view_answers_as_vlmflow_chat_does() {
    let ws = Ws::new(CHAT_PIPELINE);
    ws.build_ok(&[]);
    let ui = Ui::start(&ws);
    let page = drawn(&format!("{}/chat", ui.url), "chat");
    assert!(page.contains(r#"<option value="chat-export">"#), "{page}");

    let image = ws.files_under("out/download/images")[0].clone();
    let question = "What colour is the shape?";
    let said = post(
        &format!(
            "{}/api/chat?stage=chat-export&question=What%20colour%20is%20the%20shape%3F",
            ui.url
        ),
        &std::fs::read(&image).unwrap(),
    );
    let cli = ws.run(&[
        "chat",
        "--bundle",
        ws.path("out/chat-export").to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        question,
    ]);
    cli.assert_code(0);
    assert!(!said.1.trim().is_empty(), "an answer came: {said:?}");
    assert_eq!(said.1.trim(), cli.stdout.trim(), "{}", said.0);
    assert!(said.0.starts_with("HTTP/1.1 200"), "{}", said.0);
    // Asked again, the bundle kept loaded answers the same.
    let again = post(
        &format!(
            "{}/api/chat?stage=chat-export&question=What%20colour%20is%20the%20shape%3F",
            ui.url
        ),
        &std::fs::read(&image).unwrap(),
    );
    assert_eq!(again.1, said.1);

    // Bytes that are no image: a 400 that says so, before any text.
    let bad = post(
        &format!("{}/api/chat?stage=chat-export&question=Hi", ui.url),
        b"not an image",
    );
    assert!(bad.0.starts_with("HTTP/1.1 400"), "{}", bad.0);
    assert!(bad.1.contains("cannot use the image"), "{}", bad.1);
}

const CHAT_PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 200, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, warmup_steps = 2 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 40, batch_size = 32, lr = 2e-3, warmup_steps = 2 }

[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["clip-train", "lm-train", "preprocess"]
params = { steps = 30, batch_size = 32, lr = 2e-3, queries = 4 }

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "preprocess"]
params = { steps = 60, batch_size = 32, lr = 2e-3, eval_images = 5 }

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]
"#;

/// `POST url` with `body` over a plain socket: the response head and its body (chunked transfer
/// decoded).
fn post(url: &str, body: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, raw) = response.split_once("\r\n\r\n").unwrap();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head.to_string(), raw.to_string());
    }
    let (mut out, mut rest) = (String::new(), raw);
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (head.to_string(), out)
}

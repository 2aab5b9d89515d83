//! The shared cache: a push from one workspace and a pull in a fresh clone restore everything and
//! run nothing, on a shared folder (`file://`) and on a real S3-compatible server (moto, started
//! by `tests/servers/moto` on 127.0.0.1); a remote that serves altered bytes cannot poison the
//! local cache; two clones pushing the same runs at once leave a whole remote.

mod common;

use common::{CHAIN, TRAIN_PARAMS, Ws};

/// `CHAIN` with a `[remote]`, its input and params: a clone of the same repository.
fn clone_with_remote(url: &str) -> Ws {
    let ws = Ws::new(&format!("[remote]\nurl = \"{url}\"\n{CHAIN}"));
    ws.write("data/raw.txt", "hello shapes\n");
    ws.params("prepare", "seed = 1\n");
    ws.params("train", TRAIN_PARAMS);
    ws.params("eval", "split = \"val\"\n");
    ws
}

const STAGES: [&str; 3] = ["prepare", "train", "eval"];

/// Builds and pushes in one clone, pulls in another: everything restored from the remote, nothing
/// run, the same outputs.
fn push_then_pull(url: &str, env: &[(&str, &str)]) {
    let run = |ws: &Ws, args: &[&str]| {
        let mut cmd = ws.command(args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let first = clone_with_remote(url);
    let (code, out, err) = run(&first, &["build"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = run(&first, &["push"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("pushed 3 stages"), "{out}{err}");
    let (code, again, err) = run(&first, &["push"]);
    assert_eq!(code, Some(0), "{again}{err}");
    assert!(
        again.contains("0 objects sent"),
        "a second push sends nothing\n{again}"
    );

    let second = clone_with_remote(url);
    let (code, out, err) = run(&second, &["pull"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for stage in STAGES {
        let line = out.lines().find(|l| l.contains(stage)).unwrap_or_default();
        assert!(
            line.starts_with("restored") && line.contains("restored from remote"),
            "{stage}: {out}{err}"
        );
        assert_eq!(second.times_ran(stage), 0, "nothing ran");
    }
    for file in ["out/prepared.txt", "out/model.txt", "out/eval.txt"] {
        assert_eq!(second.read(file), first.read(file), "{file}");
    }
    let (code, out, _) = run(&second, &["build"]);
    assert_eq!(code, Some(0));
    assert!(out.lines().all(|l| l.starts_with("fresh")), "{out}");
    second.run(&["verify"]).assert_code(0);
    // The restores' provenance names the remote they came from.
    let from_remote = format!("from remote {url}");
    let log = second.run(&["log", "eval"]);
    assert!(log.stdout.contains(&from_remote), "{log}");
    let lineage = second.run(&["provenance", "out/eval.txt"]);
    assert!(lineage.stdout.contains(&from_remote), "{lineage}");
}

#[test]
fn a_push_and_a_pull_through_a_shared_folder_restore_everything_and_run_nothing() {
    let remote = tempfile::tempdir().unwrap();
    push_then_pull(&format!("file://{}", remote.path().display()), &[]);
}

#[test]
fn a_remote_serving_altered_bytes_cannot_poison_the_cache() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let first = clone_with_remote(&url);
    first.build_ok(&[]);
    first.run(&["push"]).assert_code(0);
    // Alter the remote copy of the trained model, keeping its name.
    let model = first.read("out/model.txt");
    let object = walk(remote.path())
        .into_iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|s| s == model))
        .expect("the model is on the remote");
    std::fs::write(&object, model.replace("lr", "LR")).unwrap();

    let second = clone_with_remote(&url);
    let build = second.build(&[]);
    build.assert_code(0);
    assert!(
        build
            .stderr
            .contains("came back with other content: not kept"),
        "the altered object is named\n{build}"
    );
    assert_eq!(build.status_of("train"), "ran", "{build}");
    assert_eq!(second.read("out/model.txt"), model, "{build}");
    second.run(&["verify"]).assert_code(0);
}

/// moto's S3 server on 127.0.0.1 with one bucket, stopped when dropped.
struct Moto {
    pid: i32,
    endpoint: String,
}

impl Moto {
    fn start(port_offset: u32, bucket: &str) -> Moto {
        let port = 20000 + (std::process::id() * 2 + port_offset) % 20000;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/moto");
        let out = std::process::Command::new(script)
            .args([port.to_string().as_str(), bucket])
            .output()
            .expect("run tests/servers/moto");
        assert!(
            out.status.success(),
            "moto did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Moto {
            pid: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects; the pid is the server this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}

#[test]
fn a_push_and_a_pull_through_a_real_s3_server_restore_everything() {
    let moto = Moto::start(0, "vlmflow-test");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    push_then_pull("s3://vlmflow-test/team/cache", &env);
}

#[test]
fn credentials_region_and_endpoint_come_from_an_aws_profile() {
    let moto = Moto::start(1, "vlmflow-profile");
    let aws = tempfile::tempdir().unwrap();
    let credentials = aws.path().join("credentials");
    let config = aws.path().join("config");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = wrong\n\n[team]\naws_access_key_id = test\n\
         aws_secret_access_key = test\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[profile team]\nregion = us-east-1\nendpoint_url = {}\ns3 =\n    addressing_style = path\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let files = [
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
    ];
    let ws = clone_with_remote("s3://vlmflow-profile/cache");
    ws.build_ok(&[]);
    let with_profile = |profile: &str| {
        let mut cmd = ws.command(&["push"]);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            cmd.env_remove(var);
        }
        cmd.env_remove("AWS_ENDPOINT_URL");
        cmd.envs(files).env("AWS_PROFILE", profile);
        cmd.output().unwrap()
    };
    let pushed = with_profile("team");
    let said = String::from_utf8_lossy(&pushed.stdout).into_owned()
        + &String::from_utf8_lossy(&pushed.stderr);
    assert!(
        pushed.status.success() && said.contains("pushed 3 stages"),
        "{said}"
    );
    let absent = with_profile("nobody");
    let said = String::from_utf8_lossy(&absent.stderr);
    assert!(
        !absent.status.success()
            && said.contains("AWS profile `nobody` (AWS_PROFILE) is in neither")
            && said.contains(config.to_str().unwrap()),
        "{said}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A Stagefile whose stage `many` writes `out/f1` … `out/f<n>` (each holding its number), then
/// runs `then`.
fn numbered_files(url: &str, n: u32, then: &str) -> String {
    format!(
        "[remote]\nurl = \"{url}\"\n\n[stages.many]\nkind = \"cmd\"\n\
         cmd = \"mkdir -p out && i=0 && while [ $i -lt {n} ]; do i=$((i+1)); echo $i > out/f$i; done \
         && {then}\"\nouts = [\"out\"]\n"
    )
}

#[test]
fn many_small_files_travel_in_packs_and_a_second_push_sends_nothing() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let stagefile = numbered_files(&url, 400, "true");
    let first = Ws::new(&stagefile);
    first.build_ok(&[]);
    let push = first.run(&["push"]);
    push.assert_code(0);
    assert!(
        push.stdout.contains("403 objects sent") && push.stdout.contains("in 1 pack"),
        "{push}"
    );
    let on_remote = walk(remote.path());
    let under = |dir: &str| {
        on_remote
            .iter()
            .filter(|p| p.strip_prefix(remote.path()).unwrap().starts_with(dir))
            .count()
    };
    assert_eq!(
        (under("packs"), under("pack-index")),
        (1, 1),
        "{on_remote:?}"
    );
    assert_eq!(under("objects"), 3, "record, manifest and log travel loose");
    let again = first.run(&["push"]);
    assert!(
        again.stdout.contains("0 objects sent") && again.stdout.contains("403 already there"),
        "{again}"
    );
    let second = Ws::new(&stagefile);
    second.run(&["pull"]).assert_code(0);
    assert_eq!(second.read("out/f400"), "400\n");
    second.run(&["verify"]).assert_code(0);
}

/// Two clones push the same runs at the same moment: 300 small files (packed) and a 20 MiB file
/// (in parts), the same bytes from both. A third clone then pulls everything whole.
fn two_clones_push_at_once(url: &str, env: &[(&str, &str)]) {
    let stagefile = numbered_files(url, 300, "head -c 20971520 /dev/zero > out/big");
    let clones = [Ws::new(&stagefile), Ws::new(&stagefile)];
    for ws in &clones {
        ws.build_ok(&[]);
    }
    let pushes: Vec<_> = clones
        .iter()
        .map(|ws| {
            ws.command(&["push"])
                .envs(env.iter().copied())
                .spawn()
                .unwrap()
        })
        .collect();
    for push in pushes {
        let out = push.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let third = Ws::new(&stagefile);
    let out = third
        .command(&["pull"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(third.times_ran("many"), 0, "{out:?}");
    assert_eq!(third.read("out/f300"), "300\n");
    third.run(&["verify"]).assert_code(0);
}

#[test]
fn two_clones_pushing_the_same_runs_at_once_leave_a_whole_remote() {
    let remote = tempfile::tempdir().unwrap();
    two_clones_push_at_once(&format!("file://{}", remote.path().display()), &[]);
}

#[test]
fn two_clones_pushing_at_once_to_a_real_s3_server_leave_a_whole_remote() {
    let moto = Moto::start(3, "vlmflow-race");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    two_clones_push_at_once("s3://vlmflow-race/shared", &env);
}

//! `vlmflow verify [--repair]`: a sound workspace is all well; a damaged object is found, named
//! with the artifact it breaks, quarantined by `--repair`, and its stage rebuilt by the next build.

mod common;

use common::{Ws, built_chain};

#[test]
fn verify_finds_a_damaged_object_and_repair_has_its_stage_rebuilt() {
    let ws = built_chain();
    let clean = ws.run(&["verify"]);
    clean.assert_code(0);
    assert!(clean.stdout.contains("all well"), "{clean}");

    let model = ws.read("out/model.txt");
    ws.damage_object_holding(&model);

    let found = ws.run(&["verify"]);
    found.assert_code(1);
    assert!(found.stdout.contains("damaged object"), "{found}");
    assert!(
        found
            .stdout
            .contains("cannot be restored: out/model.txt is damaged"),
        "{found}"
    );
    assert_eq!(
        ws.files_under("cache/quarantine").len(),
        0,
        "nothing moved without --repair"
    );

    let repaired = ws.run(&["verify", "--repair", "--json"]);
    repaired.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&repaired.stdout).unwrap();
    assert_eq!(report["repairs"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(ws.files_under("cache/quarantine").len(), 1);
    ws.run(&["verify"]).assert_code(0);

    let build = ws.build_ok(&[]);
    assert_eq!(build.status_of("train"), "ran", "{build}");
    assert_eq!(ws.read("out/model.txt"), model, "{build}");
    ws.run(&["verify"]).assert_code(0);
}

#[test]
fn a_stage_whose_manifest_and_then_a_member_were_damaged_still_builds() {
    let ws = Ws::new(
        r#"
[stages.many]
kind = "cmd"
cmd = "mkdir -p out/many && for i in 1 2 3 4; do echo \"file $i\" > out/many/f$i; done"
outs = ["out/many"]
"#,
    );
    ws.build_ok(&[]);
    // The manifest lost: verify --repair takes the artifact out of the run-cache; the workspace
    // still holds it, so the stage stays fresh.
    let manifest = ws
        .files_under("cache/objects")
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"vlmflow-manifest")))
        .unwrap();
    std::fs::remove_file(&manifest).unwrap();
    ws.run(&["verify", "--repair"]).assert_code(1);
    ws.build_ok(&[]).assert_statuses(&[("many", "fresh")]);

    // Then a member damaged (through its hard-linked out): the stage runs again rather than
    // failing on the missing manifest.
    ws.damage_object_holding("file 2\n");
    ws.run(&["verify", "--repair"]).assert_code(1);
    ws.build_ok(&[]).assert_statuses(&[("many", "ran")]);
    assert_eq!(ws.read("out/many/f2"), "file 2\n");
    ws.run(&["verify"]).assert_code(0);
}

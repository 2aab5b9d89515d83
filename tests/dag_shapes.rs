//! Pipelines of unusual shape through the real binary: a deep chain and a wide fan-out of
//! hundreds of stages, and unicode and spaces in paths.

mod common;

use common::Ws;

fn cmd_stage(name: &str, needs: &[String]) -> String {
    let needs: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "[stages.{name}]\nkind = \"cmd\"\ncmd = \"mkdir -p out && echo {name} > out/{name}.txt\"\n\
         outs = [\"out/{name}.txt\"]\nneeds = [{}]\n\n",
        needs.join(", ")
    )
}

#[test]
fn a_deep_chain_and_a_wide_fan_out_build_once_and_are_fresh_after() {
    const DEEP: usize = 150;
    const WIDE: usize = 150;
    let mut stagefile = String::new();
    for i in 0..DEEP {
        let needs = if i == 0 {
            vec![]
        } else {
            vec![format!("chain{}", i - 1)]
        };
        stagefile.push_str(&cmd_stage(&format!("chain{i}"), &needs));
    }
    for i in 0..WIDE {
        stagefile.push_str(&cmd_stage(&format!("leaf{i}"), &["chain0".to_string()]));
    }
    let leaves: Vec<String> = (0..WIDE).map(|i| format!("leaf{i}")).collect();
    stagefile.push_str(&cmd_stage("join", &leaves));
    let ws = Ws::new(&stagefile);

    let first = ws.build(&["-j", "2"]);
    first.assert_code(0);
    let statuses = first.statuses();
    assert_eq!(statuses.len(), DEEP + WIDE + 1);
    assert!(statuses.values().all(|s| s == "ran"), "{first}");
    assert_eq!(
        ws.read(&format!("out/chain{}.txt", DEEP - 1)),
        format!("chain{}\n", DEEP - 1)
    );

    let again = ws.build_ok(&[]);
    assert!(again.statuses().values().all(|s| s == "fresh"), "{again}");
    let dag = ws.run(&["dag"]);
    dag.assert_code(0);
    assert!(dag.stdout.contains("join"), "{dag}");
}

#[test]
fn unicode_and_spaces_in_paths_work_and_such_stage_names_are_explained() {
    // Stage names are identifiers; a unicode or spaced one is refused where it is written.
    for (header, said) in [
        ("[stages.prépare]", "Stagefile:1:11"),
        ("[stages.\"a b\"]", "invalid stage name `a b`"),
    ] {
        let ws = Ws::new(&format!(
            "{header}\nkind = \"cmd\"\ncmd = \"true\"\nouts = [\"o\"]\n"
        ));
        let run = ws.build(&[]);
        run.assert_code(2);
        assert!(run.stderr.contains(said), "{run}");
    }

    // Paths may hold anything a file name can: they build, and an edit to the input reruns.
    let ws = Ws::new(
        r#"
[stages.prepare]
kind = "cmd"
cmd = "mkdir -p 'sortie/mes fichiers' && cat 'données/entrée 1.txt' > 'sortie/mes fichiers/é.txt'"
inputs = ["données/entrée 1.txt"]
outs = ["sortie/mes fichiers"]
"#,
    );
    ws.write("données/entrée 1.txt", "bonjour\n");
    ws.build_ok(&[]).assert_statuses(&[("prepare", "ran")]);
    assert_eq!(ws.read("sortie/mes fichiers/é.txt"), "bonjour\n");
    ws.build_ok(&[]).assert_statuses(&[("prepare", "fresh")]);
    ws.write("données/entrée 1.txt", "salut\n");
    let edited = ws.build_ok(&[]);
    edited.assert_statuses(&[("prepare", "ran")]);
    assert!(
        edited.detail("prepare").contains("données/entrée 1.txt"),
        "{edited}"
    );
    assert_eq!(ws.read("sortie/mes fichiers/é.txt"), "salut\n");
}

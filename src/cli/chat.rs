//! `vlmflow chat`: talk to a trained VLM about an image — interactively, with the conversation's
//! history and the reply streamed as it is generated, or once with `--prompt` for scripts.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use vlmflow_engine::build::{EngineError, load_pipeline};
use vlmflow_engine::workspace::Workspace;
use vlmflow_ml::data::chat::Turn;
use vlmflow_ml::infer::bundle::Bundle;
use vlmflow_ml::infer::generate::SamplingConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The image to talk about (PNG or JPEG).
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// A chat bundle folder (what a chat-export stage writes); no workspace needed.
    #[arg(long, value_name = "DIR", conflicts_with = "stage")]
    bundle: Option<PathBuf>,
    /// The workspace's chat-export stage whose bundle to use.
    #[arg(long, value_name = "NAME", default_value = "chat-export")]
    stage: String,
    /// Ask this one question, print the answer and exit.
    #[arg(long)]
    prompt: Option<String>,
    /// 0 answers greedily (the most likely token every time).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
}

/// Runs without a workspace when `--bundle` names the bundle.
pub fn run(start: &Path, mut args: Args) -> Result<i32, EngineError> {
    // `-C DIR` means "as if started in DIR": relative paths are DIR's.
    args.image = start.join(&args.image);
    let dir = match &args.bundle {
        Some(dir) => start.join(dir),
        None => stage_bundle(start, &args.stage)?,
    };
    let fail = |message: String| Err(EngineError::Usage(message));
    if !args.image.is_file() {
        return fail(format!(
            "{}: no such image file: pass the path of a PNG or JPEG to --image",
            args.image.display()
        ));
    }
    let device = candle_core::Device::Cpu;
    let bundle = Bundle::load(&dir, &device).map_err(|e| EngineError::Usage(e.to_string()))?;
    let image = bundle
        .load_image(&args.image)
        .map_err(|e| EngineError::Usage(format!("cannot use the image: {e}")))?;
    let sampling = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_tokens: vec![],
    };
    let mut out = std::io::stdout();
    let mut reply = |history: &[Turn], question: &str| -> Result<String, EngineError> {
        let answer = bundle
            .reply(&image, history, question, &sampling, |piece| {
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            })
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        println!();
        Ok(answer)
    };
    if let Some(question) = &args.prompt {
        if question.trim().is_empty() {
            return fail(
                "--prompt is empty: ask a question, e.g. --prompt \"What shape is it?\"".into(),
            );
        }
        reply(&[], question.trim())?;
        return Ok(0);
    }
    eprintln!(
        "chatting about {} with {} (empty line: nothing; Ctrl-D or `exit`: quit)",
        args.image.display(),
        dir.display()
    );
    let mut history: Vec<Turn> = Vec::new();
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| EngineError::Failed(e.to_string()))?
            == 0
        {
            break;
        }
        let question = line.trim();
        if question == "exit" {
            break;
        }
        if question.is_empty() {
            continue;
        }
        let answer = reply(&history, question)?;
        history.push(Turn {
            user: question.to_string(),
            assistant: answer,
        });
    }
    Ok(0)
}

/// Where the workspace's `stage` keeps its bundle.
fn stage_bundle(start: &Path, stage: &str) -> Result<PathBuf, EngineError> {
    let Some(ws) = Workspace::find(start) else {
        return Err(EngineError::Usage(format!(
            "no Stagefile in {} or any parent folder: pass --bundle DIR, or run inside a workspace",
            start.display()
        )));
    };
    let (pipeline, _) = load_pipeline(&ws, &vlmflow_stages::kinds(), &[])?;
    let Some(found) = pipeline.stages.iter().find(|s| s.name == stage) else {
        return Err(EngineError::Usage(format!(
            "the Stagefile has no stage `{stage}`: name the chat-export stage with --stage, or pass --bundle DIR"
        )));
    };
    let dir = ws.root.join(&found.outs[0]);
    if !dir.join(vlmflow_ml::infer::bundle::INFO).is_file() {
        return Err(EngineError::Usage(format!(
            "stage `{stage}` has no bundle at {}: run `vlmflow build {stage}` first",
            dir.display()
        )));
    }
    Ok(dir)
}

//! `vlmflow chat`: talk to a trained VLM about an image — interactively, with the conversation's
//! history and the reply streamed as it is generated, or once with `--prompt` for scripts.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use vlmflow_engine::build::EngineError;
use vlmflow_stages::chat::{self, Chat, SamplingConfig, Turn};

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
    /// Where the model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs without a workspace when `--bundle` names the bundle.
pub fn run(start: &Path, mut args: Args) -> Result<i32, EngineError> {
    // `-C DIR` means "as if started in DIR": relative paths are DIR's.
    args.image = start.join(&args.image);
    let dir = match &args.bundle {
        Some(dir) => start.join(dir),
        None => chat::stage_bundle(start, &args.stage)?,
    };
    let sampling = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_tokens: vec![],
    };
    let session = Chat::open(&dir, &args.image, &args.device, sampling)?;
    let mut out = std::io::stdout();
    let mut reply = |history: &[Turn], question: &str| -> Result<String, EngineError> {
        let answer = session.reply(history, question, |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        })?;
        println!();
        Ok(answer)
    };
    if let Some(question) = &args.prompt {
        reply(&[], chat::prompt(question)?)?;
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

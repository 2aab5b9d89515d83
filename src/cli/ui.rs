//! `vlmflow ui`: serve the workspace's dashboard (`vlmflow_ui`) until Ctrl-C, its chat view
//! answered by the bundles through `vlmflow_stages::chat`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use vlmflow_engine::build::EngineError;
use vlmflow_engine::workspace::Workspace;
use vlmflow_stages::chat::{Chat, LoadedBundles, SamplingConfig, Turn};

#[derive(clap::Args)]
pub struct Args {
    /// The port to listen on (0: any free one).
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// Listen on this address instead of 127.0.0.1: anyone who can reach it sees the workspace.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Open the dashboard in the default browser.
    #[arg(long)]
    open: bool,
    /// Where the chat view runs a bundle: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The chat view's model: bundles kept loaded between questions, answering greedily as
/// `vlmflow chat` does.
struct BundleChat {
    bundles: LoadedBundles,
}

impl vlmflow_ui::ChatBackend for BundleChat {
    fn is_bundle(&self, dir: &Path) -> bool {
        vlmflow_stages::chat::is_bundle(dir)
    }

    fn answer(
        &self,
        bundle: &Path,
        image: &[u8],
        history: &[(String, String)],
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(), String> {
        let bundle = self.bundles.get(bundle).map_err(|e| e.to_string())?;
        let chat = Chat::with_image_bytes(bundle, image, SamplingConfig::default())
            .map_err(|e| e.to_string())?;
        let history: Vec<Turn> = history
            .iter()
            .map(|(user, assistant)| Turn {
                user: user.clone(),
                assistant: assistant.clone(),
            })
            .collect();
        chat.reply(&history, question, on_text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

pub fn run(ws: Workspace, args: Args) -> Result<i32, EngineError> {
    let ip = args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if !ip.is_loopback() {
        eprintln!(
            "warning: listening on {ip}: anyone who can reach this address can read the \
             workspace's runs, params, logs and artifacts"
        );
    }
    let root = ws.root.clone();
    let open = args.open;
    let chat = Arc::new(BundleChat {
        bundles: LoadedBundles::new(&args.device),
    });
    vlmflow_ui::serve(
        ws,
        vlmflow_stages::kinds(),
        chat,
        SocketAddr::new(ip, args.port),
        |addr| {
            let url = format!("http://{addr}/");
            println!(
                "vlmflow ui for {}: {url}  (Ctrl-C stops it)",
                root.display()
            );
            if open {
                let opener = if cfg!(target_os = "macos") {
                    "open"
                } else {
                    "xdg-open"
                };
                if let Err(e) = std::process::Command::new(opener).arg(&url).spawn() {
                    eprintln!("could not open a browser ({opener}: {e}); open {url} yourself");
                }
            }
        },
    )
    .map_err(|e| EngineError::Failed(e.to_string()))?;
    Ok(0)
}

//! Helpers of the integration tests: agents as child processes on 127.0.0.1 with free
//! ports below the ephemeral range, killed on drop; bounded polling; a tiny HTTP client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::httpc;
use serde_json::Value;

/// The default model, fetched into the cache on first use (as the agent does:
/// `DLLM_MODEL_DIR`, `XDG_CACHE_HOME`); a failed fetch fails the test.
pub fn model() -> PathBuf {
    engine::fetch::ensure_default_model().expect("fetching the default model (make model)")
}

/// A port free for both TCP and UDP on 127.0.0.1 (see [`testkit::free_port`]).
pub use testkit::free_port;

/// Ports of one agent.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: u16,
    pub gossip: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn new() -> Self {
        Self {
            api: free_port(),
            gossip: free_port(),
            metrics: free_port(),
        }
    }
}

/// An agent process, killed on drop.
pub struct Agent {
    pub id: String,
    pub ports: Ports,
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub fn start(id: &str, ports: Ports, seeds: &[u16], model: &Path) -> Self {
        Self::start_with(id, ports, seeds, model, &[])
    }

    pub fn start_with(id: &str, ports: Ports, seeds: &[u16], model: &Path, extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "agent-test-{}-{}-{}.log",
            std::process::id(),
            id,
            ports.api
        ));
        let file = std::fs::File::create(&log).unwrap();
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.args(["--node-id", id])
            .args(["--bind-addr", "127.0.0.1", "--advertise-addr", "127.0.0.1"])
            .args(["--bind-port", &ports.api.to_string()])
            .args(["--gossip-port", &ports.gossip.to_string()])
            .args(["--metrics-port", &ports.metrics.to_string()])
            .args(["--model", model.to_str().unwrap()])
            .args(["--log-level", "debug"])
            .args(extra)
            .env_remove("SEED_NODES")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file.try_clone().unwrap());
        if !seeds.is_empty() {
            cmd.arg(format!("--seed-nodes={}", seeds.join(",")));
        }
        let child = cmd.spawn().expect("spawn agent");
        Self {
            id: id.into(),
            ports,
            child: Some(child),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.api)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.ports.metrics)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Process id of the running agent.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The whole log of this agent so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!(
                "--- log of {} ({}) ---\n{}",
                self.id,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// Poll `f` every 250 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const T: Duration = Duration::from_secs(60);

pub async fn get(url: &str) -> anyhow::Result<httpc::Response> {
    httpc::request("GET", url, &[], b"", T).await
}

pub async fn post_json(url: &str, body: &str) -> anyhow::Result<httpc::Response> {
    httpc::request(
        "POST",
        url,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        T,
    )
    .await
}

pub async fn get_json(url: &str) -> Option<Value> {
    let r = get(url).await.ok()?;
    serde_json::from_slice(&r.body).ok()
}

/// A greedy chat request body.
pub fn chat_body(prompt: &str, max_tokens: u32, stream: bool) -> String {
    serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

/// Content of a non-streaming chat completion.
pub fn content(r: &httpc::Response) -> String {
    let v: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.text()));
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
        .to_string()
}

/// The single-process engine's greedy answer (whole model in one stage).
pub fn reference(model: &Path, prompt: &str, max_tokens: usize) -> String {
    reference_split(model, &[(0, 30)], prompt, max_tokens)
}

/// The single-process engine's greedy answer with the model split at the same layer
/// boundaries as a cluster plan (hidden states cross each boundary as f32, exactly
/// as between agents, so the tokens must match bit for bit).
pub fn reference_split(
    model: &Path,
    split: &[(usize, usize)],
    prompt: &str,
    max_tokens: usize,
) -> String {
    let mut gen = engine::Generator::load(model, 1).unwrap();
    gen.stages = split
        .iter()
        .map(|&(s, e)| engine::Stage::load(model, s, e).unwrap())
        .collect();
    let tokens = gen
        .chat_tokens(&[engine::ChatMessage::new("user", prompt)])
        .unwrap();
    let g = gen
        .generate(&tokens, &engine::SamplingParams::greedy(max_tokens), |_| {
            true
        })
        .unwrap();
    g.text
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into
/// `dir`: (certificate path, key path, certificate PEM).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key, ck.cert.pem())
}

//! End to end: the real `tui` binary in tmux (80×24) against three real agents on
//! 127.0.0.1. The nodes view lists all three, a chat prompt streams an answer, the live
//! figures fall back to `-` once idle, the Cluster view lists the links the request's
//! tokens travelled (each with a measured latency), and an agent killed and restarted
//! goes down and comes back on screen.
//!
//! Needs the `agent` binary (built with `cargo build -p agent` when missing), the default
//! model (fetched by `agent fetch-model`, where the agent keeps it: `DLLM_MODEL_DIR`,
//! `XDG_CACHE_HOME`) and tmux (installed with apt when missing); without any of them the
//! test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::free_port;

/// The default model, as the agent finds or fetches it (`agent fetch-model` prints its
/// path).
fn model(agent: &Path) -> PathBuf {
    let out = Command::new(agent)
        .arg("fetch-model")
        .stderr(Stdio::inherit())
        .output()
        .expect("running agent fetch-model");
    assert!(out.status.success(), "agent fetch-model failed");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "agent fetch-model printed {}",
        path.display()
    );
    path
}

/// The workspace's `agent` binary next to this test's target dir (built if missing).
fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = dir.join("agent");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "agent"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok && bin.is_file(),
            "could not build the agent binary at {}",
            bin.display()
        );
    }
    bin
}

/// Installs tmux with apt when it is missing; fails the test when that does not work.
fn ensure_tmux() {
    let have = || {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have() {
        return;
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "tmux"])
        .status();
    assert!(
        have(),
        "tmux is missing and `apt-get install -y tmux` did not install it"
    );
}

struct Agent {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Agent {
    fn start(
        bin: &Path,
        model: &Path,
        id: &str,
        api: u16,
        gossip: u16,
        seed: Option<u16>,
        dir: &Path,
    ) -> Self {
        let mut args: Vec<String> = [
            "--node-id",
            id,
            "--bind-addr",
            "127.0.0.1",
            "--advertise-addr",
            "127.0.0.1",
            "--log-level",
            "info",
        ]
        .map(String::from)
        .to_vec();
        args.extend([
            format!("--bind-port={api}"),
            format!("--gossip-port={gossip}"),
            format!("--metrics-port={}", free_port()),
            format!("--model={}", model.display()),
        ]);
        if let Some(s) = seed {
            args.push(format!("--seed-nodes=127.0.0.1:{s}"));
        }
        let mut a = Self {
            child: None,
            args,
            log: dir.join(format!("{id}.log")),
        };
        a.spawn(bin);
        a
    }

    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .args(&self.args)
            .env_remove("SEED_NODES")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(session: &str, cmd: &str) -> Self {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "80",
                "-y",
                "24",
                cmd,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Self {
            session: session.into(),
        }
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            Command::new("tmux")
                .args(["send-keys", "-t", &self.session, k])
                .status()
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self, s: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.session, "-l", s])
            .status()
            .unwrap();
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Wait (bounded) until `pred` holds on the screen; panics with the screen.
    fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status();
    }
}

/// The table line of `node` on the Nodes view.
fn row<'a>(screen: &'a str, node: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.starts_with(&format!("│{node} ")))
        .unwrap_or("")
}

#[test]
fn tui_shows_three_agents_chats_and_follows_a_restart() {
    ensure_tmux();
    let bin = agent_bin();
    let model = model(&bin);
    let dir = tempfile::tempdir().unwrap();
    let (g1, g2, g3) = (free_port(), free_port(), free_port());
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _a1 = Agent::start(&bin, &model, "e2e-a1", p1, g1, None, dir.path());
    let _a2 = Agent::start(&bin, &model, "e2e-a2", p2, g2, Some(g1), dir.path());
    let mut a3 = Agent::start(&bin, &model, "e2e-a3", p3, g3, Some(g1), dir.path());

    let log = dir.path().join("tui.log");
    let cmd = format!(
        "{} --seed-nodes=127.0.0.1:{p1} --log-level=debug --log-file={}",
        env!("CARGO_BIN_EXE_tui"),
        log.display()
    );
    let tui = Tmux::start(&format!("tui-e2e-{}", std::process::id()), &cmd);
    let long = Duration::from_secs(120);

    // 1. Nodes view: all three, learned from one seed, all alive.
    let s = tui.wait("three alive agents", long, |s| {
        s.contains("3/3 up")
            && ["e2e-a1", "e2e-a2", "e2e-a3"]
                .iter()
                .all(|n| row(s, n).contains("alive"))
    });
    assert!(s.contains("1:Nodes"), "{s}");

    // 2. Chat: the answer streams into the conversation with timings.
    tui.keys(&["3"]);
    tui.wait("chat view", long, |s| s.contains("prompt (Enter sends)"));
    tui.text("What is the capital of France?");
    tui.keys(&["Enter"]);
    let s = tui.wait("a finished answer", long, |s| {
        s.contains("· stop") || s.contains("· length")
    });
    let answer = s
        .lines()
        .find_map(|l| l.strip_prefix("│model: "))
        .unwrap_or_else(|| panic!("no answer line:\n{s}"));
    assert!(
        !answer.trim_end_matches('│').trim().is_empty(),
        "empty answer:\n{s}"
    );
    assert!(
        s.contains("tok/s") && s.contains("TTFT") && !s.contains("TTFT -"),
        "{s}"
    );
    assert!(!s.contains("error:"), "{s}");

    // 3. Idle again: TOK/S and STEP/S (3 s rates) fall to "-" on every agent.
    tui.keys(&["Tab", "Tab"]); // Chat -> Models -> Nodes ("1" would be typed)
    tui.wait("nodes view", long, |s| s.contains("Nodes (3)"));
    tui.wait("idle figures", Duration::from_secs(20), |s| {
        ["e2e-a1", "e2e-a2", "e2e-a3"].iter().all(|n| {
            let cells: Vec<&str> = row(s, n).trim_matches('│').split_whitespace().collect();
            cells.len() > 2 && cells[cells.len() - 2..] == ["-", "-"]
        })
    });

    // 4. The Cluster view lists the links the tokens travelled, each with a latency.
    tui.keys(&["2"]);
    let s = tui.wait("the links table", long, |s| s.contains("TO STAGE"));
    let links: Vec<Vec<&str>> = s
        .lines()
        .skip_while(|l| !l.contains("TO STAGE"))
        .skip(1)
        .map(|l| l.trim_matches('│').split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.first().is_some_and(|f| f.starts_with("e2e-a")))
        .collect();
    assert!(!links.is_empty(), "no links:\n{s}");
    for l in &links {
        // FROM TO [a,b) AVG ...: a measured round trip, no reverse 0.0 rows.
        let avg: f64 = l.get(3).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(avg > 0.0, "link without a latency: {l:?}\n{s}");
        assert!(l[2].starts_with('[') && l[2].ends_with(')'), "{l:?}");
    }
    tui.keys(&["1"]);

    // 5. Kill agent 3: it is shown down (or dead), then back when restarted.
    tui.wait("nodes view", long, |s| s.contains("Nodes (3)"));
    a3.kill();
    tui.wait("agent 3 down", long, |s| {
        let r = row(s, "e2e-a3");
        s.contains("2/3 up") && (r.contains("down") || r.contains("dead"))
    });
    a3.spawn(&bin);
    tui.wait("agent 3 back", long, |s| {
        s.contains("3/3 up") && row(s, "e2e-a3").contains("alive")
    });

    // 6. q quits.
    tui.keys(&["q"]);
    let end = Instant::now() + Duration::from_secs(10);
    while tui.alive() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tui.alive(), "tui did not exit on q");
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("stopped answering"),
        "log file lacks the down event:\n{logs}"
    );
}

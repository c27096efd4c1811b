//! `tui`: terminal setup and teardown, and the event loop tying keys, background
//! updates and redraws together. The terminal is restored on exit, error, SIGTERM
//! and panic (ratatui's panic hook).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ratatui::crossterm::event::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tui::app::{Action, App};
use tui::cli::{init_logging, Cli};
use tui::client::{self, Poller, PollerConfig, Update};
use tui::ui;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log_path();
    if let Err(e) = init_logging(&log, &cli.log_level) {
        eprintln!("tui: {e}");
        return ExitCode::from(2);
    }
    let discovery = match cli.discovery() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tui: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(mode = discovery.mode(), "tui starting");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tui: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tui::client::set_api_key(cli.api_key.as_deref())
        .and_then(|_| tui::client::set_tls_ca(cli.tls_ca.as_deref()))
    {
        eprintln!("tui: {e}");
        return ExitCode::FAILURE;
    }
    let cfg = PollerConfig {
        refresh: Duration::from_millis(cli.refresh_ms),
        ..PollerConfig::default()
    };
    let res = rt.block_on(async move {
        let (tx, rx) = mpsc::channel(1024);
        let poller = tokio::spawn(Poller::new(discovery, cfg, tx.clone()).run());
        let mut terminal = ratatui::try_init()
            .map_err(|e| anyhow::anyhow!("cannot set up the terminal (is this a TTY?): {e}"))?;
        let res = event_loop(&mut terminal, App::new(&log.display().to_string()), tx, rx).await;
        ratatui::restore();
        poller.abort();
        res
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tui: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Read terminal events on a thread (crossterm's reads block) and forward them.
fn spawn_input() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => match event::read() {
                Ok(ev) => {
                    if tx.blocking_send(ev).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("terminal input: {e}");
                    return;
                }
            },
            Ok(false) if tx.is_closed() => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!("terminal input: {e}");
                return;
            }
        }
    });
    rx
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    mut app: App,
    tx: mpsc::Sender<Update>,
    mut rx: mpsc::Receiver<Update>,
) -> anyhow::Result<()> {
    let mut keys = spawn_input();
    let mut chat: Option<JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        terminal.draw(|f| ui::draw(f, &app))?;
        tokio::select! {
            ev = keys.recv() => {
                let Some(ev) = ev else { anyhow::bail!("terminal input closed") };
                let Event::Key(key) = ev else { continue }; // resize: redraw
                match app.on_key(key, Instant::now()) {
                    Action::None => {}
                    Action::Quit => break,
                    Action::Send { addr, request } => {
                        tracing::info!(%addr, "chat request");
                        if let Some(h) = chat.take() {
                            h.abort();
                        }
                        chat = Some(tokio::spawn(client::generate(addr, *request, tx.clone())));
                    }
                    Action::Cancel => {
                        if let Some(h) = chat.take() {
                            h.abort();
                        }
                    }
                }
            }
            Some(u) = rx.recv() => {
                let now = Instant::now();
                app.on_update(u, now);
                while let Ok(u) = rx.try_recv() {
                    app.on_update(u, now);
                }
            }
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = hup.recv() => break,
        }
    }
    if let Some(h) = chat {
        h.abort();
    }
    Ok(())
}

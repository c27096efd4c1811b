use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::client::ChatEvent;
use crate::fixture;

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn type_text(app: &mut App, s: &str) {
    for c in s.chars() {
        assert_eq!(
            app.on_key(key(KeyCode::Char(c)), Instant::now()),
            Action::None
        );
    }
}

#[test]
fn tabs_cycle_both_ways() {
    let mut app = App::default();
    let now = Instant::now();
    assert_eq!(app.tab, Tab::Nodes);
    app.on_key(key(KeyCode::Tab), now);
    assert_eq!(app.tab, Tab::Cluster);
    app.on_key(key(KeyCode::Right), now);
    assert_eq!(app.tab, Tab::Chat);
    app.on_key(key(KeyCode::Tab), now);
    app.on_key(key(KeyCode::Tab), now);
    assert_eq!(app.tab, Tab::Nodes);
    app.on_key(key(KeyCode::BackTab), now);
    assert_eq!(app.tab, Tab::Models);
    app.on_key(key(KeyCode::Left), now);
    assert_eq!(app.tab, Tab::Chat);
}

#[test]
fn quit_keys() {
    let mut app = App::default();
    assert_eq!(
        app.on_key(key(KeyCode::Char('q')), Instant::now()),
        Action::Quit
    );
    assert_eq!(app.on_key(ctrl('c'), Instant::now()), Action::Quit);
    // In the chat, q is text; Ctrl-C still quits.
    app.tab = Tab::Chat;
    assert_eq!(
        app.on_key(key(KeyCode::Char('q')), Instant::now()),
        Action::None
    );
    assert_eq!(app.chat.input, "q");
    assert_eq!(app.on_key(ctrl('c'), Instant::now()), Action::Quit);
}

#[test]
fn help_toggles_and_any_key_closes_it() {
    let mut app = App::default();
    app.on_key(key(KeyCode::Char('?')), Instant::now());
    assert!(app.show_help);
    app.on_key(key(KeyCode::Char('x')), Instant::now());
    assert!(!app.show_help);
    app.tab = Tab::Chat;
    app.on_key(key(KeyCode::F(1)), Instant::now());
    assert!(app.show_help);
    assert!(app.input_is_empty_after(key(KeyCode::Esc)));
}

impl App {
    fn input_is_empty_after(&mut self, k: KeyEvent) -> bool {
        self.on_key(k, Instant::now());
        !self.show_help && self.chat.input.is_empty()
    }
}

#[test]
fn selection_moves_and_is_clamped() {
    let mut app = fixture::app();
    let now = Instant::now();
    assert_eq!(app.cluster.nodes.len(), 3);
    app.on_key(key(KeyCode::Char('j')), now);
    app.on_key(key(KeyCode::Down), now);
    app.on_key(key(KeyCode::Down), now);
    assert_eq!(app.selected, 2);
    assert_eq!(app.selected_node().unwrap().id, "agent-3");
    app.on_key(key(KeyCode::Char('k')), now);
    assert_eq!(app.selected, 1);
    app.on_key(key(KeyCode::Char('4')), now); // Models: one row
    assert_eq!(app.tab, Tab::Models);
    assert_eq!(app.selected, 0);
}

#[test]
fn fixture_statuses_follow_reachability_and_gossip() {
    let app = fixture::app();
    let st: Vec<Status> = app.cluster.nodes.values().map(|n| n.status()).collect();
    assert_eq!(st, vec![Status::Alive, Status::Alive, Status::Dead]);
    let n1 = &app.cluster.nodes["agent-1"];
    assert_eq!(n1.cpu_hist.len(), 2);
    // agent-2 sends to agent-1: 8192 bytes more in one second.
    let n2 = &app.cluster.nodes["agent-2"];
    assert_eq!(n2.links["agent-1"].out_bytes.per_second(), 8192.0);
    // agent-1 only receives from agent-2: that link is agent-2's, not a second one.
    assert!(n1.links.is_empty(), "{:?}", n1.links);
    // Every stage has a figure, the middle one too; only the entry generates tokens.
    assert_eq!(n1.steps_per_second(), 20.0);
    assert_eq!(n2.steps_per_second(), 20.0);
    assert_eq!(n2.tokens_per_second(), 20.0);
    assert_eq!(n1.tokens_per_second(), 0.0);
}

#[test]
fn rate_is_over_a_window_and_falls_to_zero_when_idle() {
    let mut r = Rate::default();
    // 40 tokens/s for 5 s, polled every second.
    for s in 0..=5u64 {
        r.push(1000 * s, 40 * s);
    }
    assert_eq!(r.per_second(), 40.0);
    assert_eq!(r.last_interval(), 40.0);
    // Idle: the counter stays at 200. One second later the window still holds some of
    // the request (falling), after the window it is exactly 0.
    r.push(6000, 200);
    assert!(r.per_second() > 0.0 && r.per_second() < 40.0, "{r:?}");
    assert_eq!(r.last_interval(), 0.0);
    r.push(7000, 200);
    r.push(8000, 200);
    assert_eq!(r.per_second(), 0.0, "{r:?}");
    // A counter that goes back (the agent restarted) starts afresh, no negative rate.
    r.push(9000, 3);
    assert_eq!(r.per_second(), 0.0);
    r.push(10_000, 13);
    assert_eq!(r.per_second(), 10.0);
    // The same snapshot twice changes nothing.
    r.push(10_000, 13);
    assert_eq!(r.per_second(), 10.0);
}

#[test]
fn idle_node_figures_fall_to_zero() {
    let mut app = fixture::app();
    let now = Instant::now();
    let i = fixture::info(2, (10, 20));
    // The request ended at t=2000: the counters stop (snapshots as at 2000, later times).
    for t in [3000u64, 4000, 5000] {
        let mut m = fixture::metrics(2, 2000, 5.0, 4096);
        m.timestamp_ms = t;
        app.on_update(
            Update::Node {
                addr: i.api_addr.clone(),
                info: Box::new(i.clone()),
                metrics: Box::new(m),
            },
            now,
        );
    }
    let n2 = &app.cluster.nodes["agent-2"];
    assert_eq!(n2.tokens_per_second(), 0.0);
    assert_eq!(n2.steps_per_second(), 0.0);
    assert_eq!(n2.links["agent-1"].out_bytes.per_second(), 0.0);
    assert_eq!(n2.steps_hist.back(), Some(&0), "{:?}", n2.steps_hist);
    // The last request's speed (the agent's gauge) is not what the live figure shows.
    assert!(n2.metrics.as_ref().unwrap().tokens_per_second > 40.0);
}

#[test]
fn node_comes_back_after_down() {
    let mut app = fixture::app();
    let now = Instant::now();
    let i = fixture::info(3, (20, 30));
    app.on_update(
        Update::Node {
            addr: i.api_addr.clone(),
            info: Box::new(i),
            metrics: Box::new(fixture::metrics(3, 3000, 5.0, 0)),
        },
        now,
    );
    assert!(app.cluster.nodes["agent-3"].reachable);
    // Gossip still says dead from the old member list, but it answers: alive.
    assert_eq!(app.cluster.nodes["agent-3"].status(), Status::Alive);
}

#[test]
fn down_of_unknown_address_is_ignored() {
    let mut app = fixture::app();
    app.on_update(
        Update::NodeDown {
            addr: "10.0.0.1:1".into(),
            error: "x".into(),
        },
        Instant::now(),
    );
    assert_eq!(app.cluster.nodes.len(), 3);
}

#[test]
fn chat_send_stream_and_finish() {
    let mut app = fixture::app();
    let t0 = Instant::now();
    app.on_key(key(KeyCode::Char('3')), t0);
    assert_eq!(app.tab, Tab::Chat);
    // Empty input sends nothing.
    assert_eq!(app.on_key(key(KeyCode::Enter), t0), Action::None);
    type_text(&mut app, "Hi there");
    app.on_key(key(KeyCode::Backspace), t0);
    let Action::Send { addr, request } = app.on_key(key(KeyCode::Enter), t0) else {
        panic!("expected a send");
    };
    assert_eq!(addr, "127.0.0.1:18081");
    assert_eq!(request.messages.len(), 1);
    assert_eq!(request.messages[0].content, "Hi ther");
    assert_eq!(request.sampling.unwrap().max_tokens, Some(128));
    assert!(app.chat.streaming);
    // A second Enter while streaming does nothing.
    type_text(&mut app, "more");
    assert_eq!(app.on_key(key(KeyCode::Enter), t0), Action::None);

    let t1 = t0 + Duration::from_millis(200);
    app.on_update(Update::Chat(ChatEvent::Token("Hel".into())), t1);
    app.on_update(
        Update::Chat(ChatEvent::Token("lo".into())),
        t1 + Duration::from_millis(500),
    );
    assert_eq!(app.chat.transcript.last().unwrap().text, "Hello");
    assert_eq!(app.chat.ttft_ms.unwrap().round(), 200.0);
    assert_eq!(app.chat.tokens_per_second.unwrap().round(), 2.0);
    app.on_update(
        Update::Chat(ChatEvent::Done(pb::FinalEvent {
            finish_reason: "stop".into(),
            usage: Some(pb::Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
            }),
            timings: Some(pb::Timings {
                ttft_ms: 150.0,
                tokens_per_second: 30.0,
                total_ms: 300.0,
            }),
            request_id: "r".into(),
            ..Default::default()
        })),
        t1,
    );
    assert!(!app.chat.streaming);
    assert_eq!(app.chat.ttft_ms, Some(150.0));
    assert_eq!(app.chat.finish.as_deref(), Some("stop"));

    // The second turn carries the history.
    app.chat.input = "again".into();
    let Action::Send { request, .. } = app.on_key(key(KeyCode::Enter), t1) else {
        panic!("expected a send");
    };
    let roles: Vec<&str> = request.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, vec!["user", "assistant", "user"]);
}

#[test]
fn chat_cancel_and_error() {
    let mut app = fixture::app();
    app.tab = Tab::Chat;
    app.chat.input = "x".into();
    assert!(matches!(
        app.on_key(key(KeyCode::Enter), Instant::now()),
        Action::Send { .. }
    ));
    assert_eq!(
        app.on_key(key(KeyCode::Esc), Instant::now()),
        Action::Cancel
    );
    assert!(!app.chat.streaming);
    assert_eq!(app.chat.transcript.len(), 1, "empty answer dropped");
    // Late tokens of the cancelled request are ignored.
    app.on_update(
        Update::Chat(ChatEvent::Token("late".into())),
        Instant::now(),
    );
    assert_eq!(app.chat.transcript.len(), 1);

    app.chat.input = "y".into();
    app.on_key(key(KeyCode::Enter), Instant::now());
    app.on_update(
        Update::Chat(ChatEvent::Error("Unavailable: plan incomplete".into())),
        Instant::now(),
    );
    assert_eq!(
        app.chat.error.as_deref(),
        Some("Unavailable: plan incomplete")
    );
    assert!(!app.chat.streaming);
}

#[test]
fn chat_without_reachable_agent_says_so() {
    let mut app = App {
        tab: Tab::Chat,
        ..App::default()
    };
    app.chat.input = "hello".into();
    assert_eq!(
        app.on_key(key(KeyCode::Enter), Instant::now()),
        Action::None
    );
    assert_eq!(app.chat.error.as_deref(), Some("no agent is reachable"));
    assert_eq!(app.chat.input, "hello", "input kept for a retry");
}

#[test]
fn chat_settings_cycle() {
    let mut app = fixture::app();
    app.tab = Tab::Chat;
    let now = Instant::now();
    let t = app.chat.settings.temperature;
    app.on_key(ctrl('t'), now);
    assert_eq!(app.chat.settings.temperature, (t + 1) % TEMPERATURES.len());
    app.on_key(ctrl('n'), now);
    assert_eq!(MAX_TOKENS[app.chat.settings.max_tokens], 256);
    app.on_key(ctrl('p'), now);
    assert_eq!(TOP_P[app.chat.settings.top_p], 0.9);
    assert_eq!(app.chat.settings.model, None);
    app.on_key(ctrl('o'), now);
    assert_eq!(
        app.chat.settings.model.as_deref(),
        Some("SmolLM2-135M-Instruct.Q4_1")
    );
    app.on_key(ctrl('o'), now);
    assert_eq!(app.chat.settings.model, None);
}

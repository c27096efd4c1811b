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
    // 4096 bytes more in one second.
    assert_eq!(n1.peer_rates["agent-2"].sent_per_s, 4096.0);
    assert_eq!(n1.peer_rates["agent-2"].recv_per_s, 2048.0);
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

//! Render tests: every view from the fixed cluster state on an 80×24 TestBackend.

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;

use super::*;
use crate::app::{Tab, Turn};
use crate::fixture;

fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

fn text(b: &Buffer) -> String {
    let mut s = String::new();
    for y in 0..b.area.height {
        for x in 0..b.area.width {
            s.push_str(b[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

fn find(b: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let t = text(b);
    t.lines().enumerate().find_map(|(y, l)| {
        l.find(needle)
            .map(|i| (l[..i].chars().count() as u16, y as u16))
    })
}

#[test]
fn nodes_view_lists_every_node_with_status_and_resources() {
    let app = fixture::app();
    let b = render(&app, 80, 24);
    let t = text(&b);
    for needle in [
        "1:Nodes",
        "Nodes (3)",
        "agent-1",
        "agent-2",
        "agent-3",
        "127.0.0.1:18081",
        "alive",
        "dead",
        "[0,10)",
        "[20,30)",
        "7.0G/24G",
        "TOK/S",
        "STEP/S",
        "CPU % of 2 CPUs",
        "steps/s 20.0",
        "q quit",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
    // No range spelled the old, overlapping-looking way.
    assert!(!t.contains("0-10") && !t.contains("10-20"), "{t}");
    // The dead node is red.
    let (x, y) = find(&b, "dead").unwrap();
    assert_eq!(b[(x, y)].fg, ratatui::style::Color::Red);
    // The detail of the selected (first) node shows gauges.
    assert!(t.contains("CPU 20% of 2 CPUs"), "{t}");
    assert!(t.contains("MEM 7.0G/24G"), "{t}");
    // Its start time, not a raw generation number; the plan id as everywhere else.
    assert!(t.contains("started 2025-11-24 14:03 UTC · up 1h02m"), "{t}");
    assert!(t.contains("plan 000000000000004d"), "{t}");
    assert!(!t.contains("gen 1"), "{t}");
}

/// The cells of `node`'s row in the nodes table, split on blanks.
fn cells(t: &str, node: &str) -> Vec<String> {
    t.lines()
        .find(|l| l.starts_with(&format!("│{node} ")))
        .unwrap_or_else(|| panic!("no row for {node} in\n{t}"))
        .trim_matches('│')
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn every_stage_has_a_live_figure_and_only_the_entry_generates() {
    let app = fixture::app();
    let t = text(&render(&app, 100, 24));
    // NODE STATUS ADDRESS CPU MEMORY GPU LAYERS REQ TOK/S STEP/S
    let a1 = cells(&t, "agent-1");
    let a2 = cells(&t, "agent-2");
    let a3 = cells(&t, "agent-3");
    assert_eq!(a1[6..], ["[0,10)", "0", "-", "20.0"], "{t}");
    assert_eq!(a2[6..], ["[10,20)", "1", "20.0", "20.0"], "{t}");
    // agent-3 does not answer: no live figures at all.
    assert_eq!(a3[8..], ["-", "-"], "{t}");
}

#[test]
fn columns_fit_their_content_on_a_wide_terminal() {
    let app = fixture::app();
    let t = text(&render(&app, 160, 30));
    let header = t.lines().find(|l| l.contains("NODE")).unwrap();
    let at = |h: &str| header.find(h).unwrap();
    // "agent-1" is 7 wide, "127.0.0.1:18081" 15, plus one space between columns.
    assert_eq!(at("STATUS") - at("NODE"), 8, "{header}");
    assert_eq!(at("CPU") - at("ADDRESS"), 16, "{header}");
    assert!(
        header.trim_end_matches(['│', ' ']).chars().count() < 100,
        "{header}"
    );
}

#[test]
fn human_times() {
    let started = fixture::STARTED_MS;
    assert_eq!(fmt_started(started, started + 60_000), "14:03:27 UTC");
    assert_eq!(
        fmt_started(started, started + 2 * 86_400_000),
        "2025-11-24 14:03 UTC"
    );
    // Not a plausible start time: shown as the raw generation.
    assert_eq!(fmt_started(7, 0), "gen 7");
    // Leap days come out right.
    assert_eq!(
        fmt_started(1_709_164_800_000, 2_000_000_000_000),
        "2024-02-29 00:00 UTC"
    );
    assert_eq!(fmt_duration(42), "42s");
    assert_eq!(fmt_duration(3723), "1h02m");
    assert_eq!(fmt_duration(303), "5m03s");
    assert_eq!(fmt_duration(2 * 86_400 + 7200), "2d02h");
}

#[test]
fn nodes_view_detail_of_down_node_shows_the_error() {
    let mut app = fixture::app();
    app.selected = 2;
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("unreachable: connection refused"), "{t}");
}

#[test]
fn empty_state_says_it_is_looking() {
    let app = App::default();
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("Looking for agents"), "{t}");
    let t = text(&render(
        &App {
            tab: Tab::Cluster,
            ..App::default()
        },
        80,
        24,
    ));
    assert!(t.contains("No layer plan yet"), "{t}");
}

#[test]
fn cluster_view_colours_the_bar_by_agent() {
    let mut app = fixture::app();
    app.tab = Tab::Cluster;
    let b = render(&app, 80, 24);
    let t = text(&b);
    assert!(t.contains("SmolLM2-135M-Instruct.Q4_1 · 30 layers"), "{t}");
    // Bar: first line inside the plan block, 78 cells; thirds owned by the three agents.
    let y = 2;
    let colors: Vec<_> = (1..79).map(|x| b[(x, y)].fg).collect();
    assert!(colors.iter().all(|c| *c != Color::Reset), "{t}");
    assert_eq!(colors[0], PALETTE[0]);
    assert_eq!(colors[39], PALETTE[1]);
    assert_eq!(colors[77], PALETTE[2]);
    for needle in [
        "plan 000000000000004d",
        "agent-1  [0,10)   10 layers",
        "agent-2  [10,20)  10 layers",
        "Links a token travels",
        "AVG",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
    // The links agent-2 sends on, in layer order, with their figures; no reverse rows
    // from the agents that only receive from it.
    let rows: Vec<&str> = t
        .lines()
        .skip_while(|l| !l.contains("Links a token travels"))
        .filter(|l| l.contains("[0,10)") || l.contains("[20,30)") || l.starts_with("│agent-"))
        .filter(|l| !l.contains("layers"))
        .collect();
    assert_eq!(rows.len(), 2, "{t}");
    let words = |l: &str| -> Vec<String> {
        l.trim_matches('│')
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // FROM TO STAGE AVG P50 P99 SENT/S TOTAL
    assert_eq!(
        words(rows[0]),
        ["agent-2", "agent-1", "[0,10)", "2.5", "2.0", "9.0", "8.0K/s", "8.0K"],
        "{t}"
    );
    assert_eq!(
        words(rows[1])[..3],
        ["agent-2", "agent-3", "[20,30)"],
        "{t}"
    );
}

#[test]
fn idle_links_show_no_rate_noise() {
    let mut app = fixture::app();
    app.tab = Tab::Cluster;
    let i = fixture::info(2, (10, 20));
    for t in [4000u64, 6000] {
        let mut m = fixture::metrics(2, 2000, 5.0, 4096);
        m.timestamp_ms = t;
        app.on_update(
            crate::client::Update::Node {
                addr: i.api_addr.clone(),
                info: Box::new(i.clone()),
                metrics: Box::new(m),
            },
            std::time::Instant::now(),
        );
    }
    let t = text(&render(&app, 100, 24));
    let row = t
        .lines()
        .find(|l| l.starts_with("│agent-2") && l.contains("[0,10)"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(!row.contains("B/s") && !row.contains("K/s"), "{row}");
    assert!(row.contains(" - "), "{row}");
}

#[test]
fn bar_cells_cover_all_layers() {
    let cells = cluster::bar_cells(&[(0, 10), (10, 20), (20, 30)], 30, 30);
    assert_eq!(cells.iter().filter(|c| **c == Some(0)).count(), 10);
    assert_eq!(cells.iter().filter(|c| **c == Some(2)).count(), 10);
    let gap = cluster::bar_cells(&[(0, 10)], 30, 30);
    assert_eq!(gap[15], None);
}

#[test]
fn chat_view_shows_conversation_settings_and_timings() {
    let mut app = fixture::app();
    app.tab = Tab::Chat;
    app.chat.transcript = vec![
        Turn {
            role: "user".into(),
            text: "What is 2+2?".into(),
        },
        Turn {
            role: "assistant".into(),
            text: "2+2 equals 4.".into(),
        },
    ];
    app.chat.ttft_ms = Some(123.4);
    app.chat.tokens_per_second = Some(41.25);
    app.chat.tokens = 7;
    app.chat.finish = Some("stop".into());
    app.chat.input = "next question".into();
    let t = text(&render(&app, 80, 24));
    for needle in [
        "you: What is 2+2?",
        "model: 2+2 equals 4.",
        "TTFT 123 ms",
        "41.2 tok/s",
        "7 tokens",
        "stop",
        "temp 0.7",
        "max 128",
        "next question",
        "Enter send",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
}

#[test]
fn chat_long_answer_keeps_the_end_visible() {
    let mut app = fixture::app();
    app.tab = Tab::Chat;
    let long: Vec<String> = (0..600).map(|i| format!("w{i}")).collect();
    app.chat.transcript = vec![Turn {
        role: "assistant".into(),
        text: long.join(" "),
    }];
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("w599"), "{t}");
    assert!(!t.contains("w0 "), "{t}");
    app.chat.scroll = 1000; // clamped to the top
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("model: w0 "), "{t}");
}

#[test]
fn models_view_lists_models_and_shards() {
    let mut app = fixture::app();
    app.tab = Tab::Models;
    let t = text(&render(&app, 80, 24));
    for needle in [
        "SmolLM2-135M-Instruct.Q4_1",
        "llama",
        "8192",
        "576",
        "49152",
        "Served by",
        "[10,20)",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
}

#[test]
fn help_overlay_lists_keys() {
    let mut app = fixture::app();
    app.show_help = true;
    let t = text(&render(&app, 80, 24));
    assert!(t.contains("Help"), "{t}");
    assert!(t.contains("quit"), "{t}");
    assert!(t.contains("/tmp/tui.log"), "{t}");
}

#[test]
fn every_view_survives_tiny_and_odd_sizes() {
    let mut app = fixture::app();
    for tab in Tab::ALL {
        app.tab = tab;
        for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (200, 60), (33, 11)] {
            render(&app, w, h);
        }
        app.show_help = !app.show_help;
        render(&app, 12, 4);
    }
}

#[test]
fn wrap_breaks_words_and_long_tokens() {
    assert_eq!(chat::wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    assert_eq!(chat::wrap("abcdefg", 3), vec!["abc", "def", "g"]);
    assert_eq!(chat::wrap("a\nb", 10), vec!["a", "b"]);
}

#[test]
fn bytes_are_human_readable() {
    assert_eq!(fmt_bytes(512), "512B");
    assert_eq!(fmt_bytes(1536), "1.5K");
    assert_eq!(fmt_bytes(24 << 30), "24G");
}

#[test]
#[ignore = "prints every view; run with --ignored --nocapture to look at them"]
fn print_views() {
    let mut app = fixture::app();
    app.chat.transcript = vec![Turn {
        role: "user".into(),
        text: "hi".into(),
    }];
    for tab in Tab::ALL {
        app.tab = tab;
        println!("{}", text(&render(&app, 80, 24)));
    }
}

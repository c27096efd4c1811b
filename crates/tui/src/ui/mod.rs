//! Rendering: the tab bar, one module per view, the footer with key hints and the
//! help overlay. Everything draws from [`App`] only, so views are testable with
//! ratatui's `TestBackend`.

mod chat;
mod cluster;
mod help;
mod models;
mod nodes;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use crate::app::{App, Status, Tab};

/// Colours given to nodes in order of their id.
pub const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::LightRed,
    Color::LightCyan,
    Color::LightMagenta,
];

/// Draw the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_tabs(f, app, top);
    match app.tab {
        Tab::Nodes => nodes::draw(f, app, body),
        Tab::Cluster => cluster::draw(f, app, body),
        Tab::Chat => chat::draw(f, app, body),
        Tab::Models => models::draw(f, app, body),
    }
    let footer =
        Paragraph::new(app.footer_hints()).style(Style::new().fg(Color::Black).bg(Color::Gray));
    f.render_widget(footer, foot);
    if app.show_help {
        help::draw(f, app, body);
    }
}

fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let up = app.cluster.nodes.values().filter(|n| n.reachable).count();
    let summary = format!(
        " {} · {}/{} up ",
        if app.cluster.mode.is_empty() {
            "…"
        } else {
            &app.cluster.mode
        },
        up,
        app.cluster.nodes.len()
    );
    let w = summary.chars().count() as u16;
    let [tabs_area, sum_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(w)]).areas(area);
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}:{}", i + 1, t.title()));
    let tabs = Tabs::new(titles)
        .select(app.tab.index())
        .highlight_style(
            Style::new()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
        .divider("│");
    f.render_widget(tabs, tabs_area);
    f.render_widget(
        Paragraph::new(summary).style(Style::new().fg(Color::DarkGray)),
        sum_area,
    );
}

/// Style of a status label.
pub fn status_style(s: Status) -> Style {
    match s {
        Status::Alive => Style::new().fg(Color::Green),
        Status::Suspect => Style::new().fg(Color::Yellow),
        Status::Dead | Status::Down => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// Colour of node `id` (by its position among the known nodes).
pub fn node_color(app: &App, id: &str) -> Color {
    let i = app.cluster.nodes.keys().position(|k| k == id).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// Human-readable bytes with one decimal (`1.5G`, `300M`, `12K`, `512B`).
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// Column widths fitted to the header and the widest cell of each column: columns
/// never stretch to fill a wide terminal (ratatui shrinks them when it is narrow).
pub fn fit_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<Constraint> {
    (0..header.len())
        .map(|i| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0);
            Constraint::Length(w as u16)
        })
        .collect()
}

/// A rate for a table cell: one decimal, `-` when nothing moved in the window.
pub fn fmt_rate(per_s: f64) -> String {
    if per_s > 0.0 {
        format!("{per_s:.1}")
    } else {
        "-".into()
    }
}

/// Seconds as `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn fmt_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// When a process of generation `gen` (its start time in Unix ms) started, in UTC:
/// `14:03:27 UTC` within a day of `now_ms`, else `2025-11-24 14:03 UTC`. Generations
/// that are not plausible times (before 2001) are shown as `gen N`.
pub fn fmt_started(gen: u64, now_ms: u64) -> String {
    if gen < 1_000_000_000_000 {
        return format!("gen {gen}");
    }
    let secs = gen / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if now_ms.saturating_sub(gen) < 86_400_000 {
        return format!("{h:02}:{m:02}:{s:02} UTC");
    }
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A bold header line.
pub fn header(cells: &[&str]) -> ratatui::widgets::Row<'static> {
    ratatui::widgets::Row::new(cells.iter().map(|c| c.to_string()))
        .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray))
}

/// A dim one-line message.
pub fn dim(text: impl Into<String>) -> Line<'static> {
    Line::from(Span::styled(text.into(), Style::new().fg(Color::DarkGray)))
}

#[cfg(test)]
mod tests;

//! The help overlay (`?` / F1).

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::App;

const KEYS: [(&str, &str); 12] = [
    ("Tab ← →", "next / previous view (1-4 jump)"),
    ("j k ↑ ↓", "move the selection"),
    ("Enter", "Nodes: chat via the selected node"),
    ("? F1", "this help"),
    ("q Ctrl-C", "quit (only Ctrl-C in Chat)"),
    ("Chat Enter", "send the prompt"),
    ("Chat Esc", "cancel the answer / clear input"),
    ("Chat ^T ^P", "temperature / top-p"),
    ("Chat ^N", "max tokens"),
    ("Chat ^O", "model"),
    ("Chat ^L ^U", "clear conversation / input"),
    ("Chat ↑ ↓", "scroll the conversation"),
];

/// Draw the overlay over `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let h = (KEYS.len() as u16 + 4).min(area.height);
    let w = 60.min(area.width);
    let popup = area.centered(Constraint::Length(w), Constraint::Length(h));
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<11}"),
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*d),
            ])
        })
        .collect();
    lines.push(Line::from(format!("logs: {}", app.log_file)));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            Block::bordered()
                .title(" Help ")
                .border_style(Style::new().fg(Color::Yellow)),
        ),
        popup,
    );
}

//! Chat view: the conversation (streamed token by token), the settings and timings
//! line, and the input box.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::dim;
use crate::app::{App, MAX_TOKENS, TEMPERATURES, TOP_P};

/// Draw the Chat view into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let [conv, status, input] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(3),
    ])
    .areas(area);
    draw_conversation(f, app, conv);
    draw_status(f, app, status);
    let chat = &app.chat;
    let (title, style) = if chat.streaming {
        (
            " generating… (Esc cancels) ",
            Style::new().fg(Color::DarkGray),
        )
    } else {
        (" prompt (Enter sends) ", Style::new().fg(Color::Yellow))
    };
    // Show the end of a long input.
    let w = input.width.saturating_sub(3) as usize;
    let chars: Vec<char> = chat.input.chars().collect();
    let shown: String = chars[chars.len().saturating_sub(w)..].iter().collect();
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(shown),
            Span::styled("▏", Style::new().fg(Color::Yellow)),
        ]))
        .block(Block::bordered().title(title).border_style(style)),
        input,
    );
}

fn draw_conversation(f: &mut Frame, app: &App, area: Rect) {
    let chat = &app.chat;
    let block = Block::bordered().title(" Conversation ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = inner.width.max(1) as usize;
    let mut lines: Vec<Line> = Vec::new();
    for t in &chat.transcript {
        let (who, color) = if t.role == "user" {
            ("you", Color::Cyan)
        } else {
            ("model", Color::Green)
        };
        let prefix = format!("{who}: ");
        let body = if t.text.is_empty() && chat.streaming {
            "…"
        } else {
            t.text.as_str()
        };
        for (i, l) in wrap(&format!("{prefix}{body}"), width)
            .into_iter()
            .enumerate()
        {
            if i == 0 && l.starts_with(&prefix) {
                lines.push(Line::from(vec![
                    Span::styled(
                        prefix.clone(),
                        Style::new().fg(color).add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(l[prefix.len()..].to_string()),
                ]));
            } else {
                lines.push(Line::raw(l));
            }
        }
    }
    if let Some(e) = &chat.error {
        for l in wrap(&format!("error: {e}"), width) {
            lines.push(Line::styled(l, Style::new().fg(Color::Red)));
        }
    }
    if lines.is_empty() {
        lines.push(dim("Type a prompt below and press Enter."));
    }
    let h = inner.height as usize;
    let max_scroll = lines.len().saturating_sub(h);
    let scroll = (chat.scroll as usize).min(max_scroll);
    let end = lines.len() - scroll;
    let start = end.saturating_sub(h);
    f.render_widget(Paragraph::new(lines[start..end].to_vec()), inner);
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let chat = &app.chat;
    let s = &chat.settings;
    let target = chat
        .target
        .clone()
        .or_else(|| {
            app.cluster
                .entry_addr(app.selected_node().map(|n| n.id.as_str()))
        })
        .unwrap_or_else(|| "no agent".into());
    let settings = format!(
        "→ {target} · model {} · temp {} · top-p {} · max {}",
        s.model.as_deref().unwrap_or("default"),
        TEMPERATURES[s.temperature],
        TOP_P[s.top_p],
        MAX_TOKENS[s.max_tokens],
    );
    let fmt = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x:.0}{unit}"))
            .unwrap_or_else(|| "-".into())
    };
    let timing = format!(
        "TTFT {} · {} · {} tokens{}",
        fmt(chat.ttft_ms, " ms"),
        chat.tokens_per_second
            .map(|x| format!("{x:.1} tok/s"))
            .unwrap_or_else(|| "- tok/s".into()),
        chat.tokens,
        chat.finish
            .as_ref()
            .map(|r| format!(" · {r}"))
            .unwrap_or_default(),
    );
    f.render_widget(
        Paragraph::new(vec![
            dim(settings),
            Line::styled(timing, Style::new().fg(Color::Magenta)),
        ]),
        area,
    );
}

/// Word-wrap `text` to `width` columns (long words are split; newlines kept).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split(' ') {
            let wl = word.chars().count();
            if len > 0 && len + 1 + wl > width {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            for ch in word.chars() {
                if len == width {
                    out.push(std::mem::take(&mut line));
                    len = 0;
                }
                line.push(ch);
                len += 1;
            }
        }
        out.push(line);
    }
    out
}

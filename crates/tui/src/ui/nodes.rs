//! Nodes view: every agent in a table, the selected one in detail with gauges and
//! sparklines.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::{dim, fmt_bytes, header, node_color, status_style};
use crate::app::{App, NodeView};

/// Draw the Nodes view into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let n = app.cluster.nodes.len() as u16;
    let table_h = (n.max(1) + 3).min(area.height.saturating_sub(8).max(4));
    let [table_area, detail] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
    draw_table(f, app, table_area);
    match app.selected_node() {
        Some(node) => draw_detail(f, app, node, detail),
        None => {
            let msg = if app.cluster.discovered.is_empty() {
                "Looking for agents…"
            } else {
                "Waiting for agents to answer…"
            };
            f.render_widget(Paragraph::new(dim(msg)).block(Block::bordered()), detail);
        }
    }
}

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.cluster.nodes.values().map(|n| {
        let r = n.resources();
        let st = n.status();
        let m = n.metrics.as_ref().filter(|_| n.reachable);
        let layers = n
            .layers()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{}-{}", l.start, l.end))
            .unwrap_or_else(|| "-".into());
        Row::new(vec![
            Cell::from(n.id.clone()).style(Style::new().fg(node_color(app, &n.id))),
            Cell::from(st.label()).style(status_style(st)),
            Cell::from(n.addr.clone()),
            Cell::from(if n.reachable {
                format!("{:.0}%", r.cpu_usage_percent)
            } else {
                "-".into()
            }),
            Cell::from(if n.reachable && r.memory_total_bytes > 0 {
                format!(
                    "{}/{}",
                    fmt_bytes(r.memory_used_bytes),
                    fmt_bytes(r.memory_total_bytes)
                )
            } else {
                "-".into()
            }),
            Cell::from(r.gpus.len().to_string()),
            Cell::from(layers),
            Cell::from(
                m.map(|m| m.requests_in_flight.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(
                m.map(|m| format!("{:.1}", m.tokens_per_second))
                    .unwrap_or_else(|| "-".into()),
            ),
        ])
    });
    let widths = [
        Constraint::Min(8),
        Constraint::Length(7),
        Constraint::Min(15),
        Constraint::Length(4),
        Constraint::Length(11),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(header(&[
            "NODE", "STATUS", "ADDRESS", "CPU", "MEMORY", "GPU", "LAYERS", "REQ", "TOK/S",
        ]))
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(format!(" Nodes ({}) ", app.cluster.nodes.len())));
    let mut state = TableState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(f: &mut Frame, app: &App, n: &NodeView, area: Rect) {
    let color = node_color(app, &n.id);
    let mut title = format!(" {} · {} ", n.id, n.status().label());
    if let Some(i) = &n.info {
        title.push_str(&format!(
            "· v{} · gen {} · up {}s ",
            i.version, i.generation, i.uptime_seconds
        ));
    }
    let block = Block::bordered()
        .title(title)
        .border_style(Style::new().fg(color));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let [notes, gauges, sparks] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);

    let note = if !n.reachable {
        Line::styled(
            format!(
                "unreachable: {}",
                n.last_error.as_deref().unwrap_or("never answered")
            ),
            Style::new().fg(Color::Red),
        )
    } else if let Some(i) = n.info.as_ref().filter(|i| !i.healthy) {
        Line::styled(
            format!("unhealthy: {}", i.health_message),
            Style::new().fg(Color::Yellow),
        )
    } else {
        let r = n.resources();
        let gpus: Vec<String> = r.gpus.iter().map(|g| g.name.clone()).collect();
        dim(format!(
            "{} cores · GPUs: {} · plan v{:x}",
            r.cpu_cores,
            if gpus.is_empty() {
                "none".into()
            } else {
                gpus.join(", ")
            },
            n.info.as_ref().map(|i| i.plan_version).unwrap_or(0)
        ))
    };
    f.render_widget(Paragraph::new(note), notes);

    let r = n.resources();
    let [g1, g2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(gauges);
    let cpu = (r.cpu_usage_percent as f64 / 100.0).clamp(0.0, 1.0);
    f.render_widget(
        Gauge::default()
            .ratio(cpu)
            .label(format!("CPU {:.0}%", r.cpu_usage_percent))
            .gauge_style(Style::new().fg(Color::Green).bg(Color::Black)),
        g1,
    );
    let mem = if r.memory_total_bytes > 0 {
        (r.memory_used_bytes as f64 / r.memory_total_bytes as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    f.render_widget(
        Gauge::default()
            .ratio(mem)
            .label(format!(
                "MEM {}/{}",
                fmt_bytes(r.memory_used_bytes),
                fmt_bytes(r.memory_total_bytes)
            ))
            .gauge_style(Style::new().fg(Color::Blue).bg(Color::Black)),
        g2,
    );

    if sparks.height < 3 {
        return;
    }
    let [s1, s2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let tail = |v: &std::collections::VecDeque<u64>, w: u16| -> Vec<u64> {
        let w = w.saturating_sub(2) as usize;
        v.iter().skip(v.len().saturating_sub(w)).copied().collect()
    };
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(" CPU % "))
            .data(tail(&n.cpu_hist, s1.width))
            .max(100)
            .style(Style::new().fg(Color::Green)),
        s1,
    );
    let tps = n
        .metrics
        .as_ref()
        .map(|m| m.tokens_per_second)
        .unwrap_or(0.0);
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" tokens/s {tps:.1} ")))
            .data(tail(&n.tps_hist, s2.width))
            .style(Style::new().fg(color)),
        s2,
    );
}

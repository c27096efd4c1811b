//! Nodes view: every agent in a table, the selected one in detail with gauges and
//! sparklines.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::{
    dim, fit_widths, fmt_bytes, fmt_duration, fmt_rate, fmt_started, header, node_color, now_ms,
    status_style,
};
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

/// Header of the nodes table.
const COLUMNS: [&str; 10] = [
    "NODE", "STATUS", "ADDRESS", "CPU", "MEMORY", "GPU", "LAYERS", "REQ", "TOK/S", "STEP/S",
];

/// The cells of one node's row, as text.
fn row_text(n: &NodeView) -> Vec<String> {
    let r = n.resources();
    let m = n.metrics.as_ref().filter(|_| n.reachable);
    let layers = n
        .layers()
        .filter(|l| !l.is_empty())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "-".into());
    vec![
        n.id.clone(),
        n.status().label().to_string(),
        n.addr.clone(),
        if n.reachable {
            format!("{:.0}%", r.cpu_usage_percent)
        } else {
            "-".into()
        },
        if n.reachable && r.memory_total_bytes > 0 {
            format!(
                "{}/{}",
                fmt_bytes(r.memory_used_bytes),
                fmt_bytes(r.memory_total_bytes)
            )
        } else {
            "-".into()
        },
        r.gpus.len().to_string(),
        layers,
        m.map(|m| m.requests_in_flight.to_string())
            .unwrap_or_else(|| "-".into()),
        m.map(|_| fmt_rate(n.tokens_per_second()))
            .unwrap_or_else(|| "-".into()),
        m.map(|_| fmt_rate(n.steps_per_second()))
            .unwrap_or_else(|| "-".into()),
    ]
}

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let texts: Vec<Vec<String>> = app.cluster.nodes.values().map(row_text).collect();
    let widths = fit_widths(&COLUMNS, &texts);
    let rows = app.cluster.nodes.values().zip(texts).map(|(n, cells)| {
        let st = n.status();
        Row::new(cells.into_iter().enumerate().map(|(i, c)| {
            let cell = Cell::from(c);
            match i {
                0 => cell.style(Style::new().fg(node_color(app, &n.id))),
                1 => cell.style(status_style(st)),
                _ => cell,
            }
        }))
    });
    let table = Table::new(rows, widths)
        .header(header(&COLUMNS))
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
            "· v{} · started {} · up {} ",
            i.version,
            fmt_started(i.generation, now_ms()),
            fmt_duration(i.uptime_seconds)
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
            "{} · GPUs: {} · plan {}",
            cpus(&r),
            if gpus.is_empty() {
                "none".into()
            } else {
                gpus.join(", ")
            },
            proto::fmt_plan(n.info.as_ref().map(|i| i.plan_version).unwrap_or(0))
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
            .label(format!(
                "CPU {:.0}% of {}",
                r.cpu_usage_percent,
                limit_label(&r)
            ))
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
            .block(Block::bordered().title(format!(" CPU % of {} ", limit_label(&r))))
            .data(tail(&n.cpu_hist, s1.width))
            .max(100)
            .style(Style::new().fg(Color::Green)),
        s1,
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(
                " steps/s {:.1} · tokens/s {:.1} ",
                n.steps_per_second(),
                n.tokens_per_second()
            )))
            .data(tail(&n.steps_hist, s2.width))
            .style(Style::new().fg(color)),
        s2,
    );
}

/// The CPUs an agent may use, e.g. `0.5 CPUs` (a cgroup quota) or `2 CPUs`.
fn limit_label(r: &proto::v1::Resources) -> String {
    let limit = if r.cpu_limit_cores > 0.0 {
        f64::from(r.cpu_limit_cores)
    } else {
        f64::from(r.cpu_cores.max(1))
    };
    if (limit - limit.round()).abs() < 0.005 {
        format!("{limit:.0} CPUs")
    } else {
        format!("{limit:.2} CPUs")
    }
}

/// `2 cores` or `2 cores, limited to 0.50 CPUs` when a cgroup quota is lower.
fn cpus(r: &proto::v1::Resources) -> String {
    let limited = r.cpu_limit_cores > 0.0 && r.cpu_limit_cores + 0.005 < r.cpu_cores as f32;
    if limited {
        format!("{} cores, limited to {}", r.cpu_cores, limit_label(r))
    } else {
        format!("{} cores", r.cpu_cores)
    }
}

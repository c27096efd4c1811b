//! Cluster view: the layer plan as one bar over all layers, coloured by agent, and
//! per-hop network figures between agents.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::{dim, fmt_bytes, header, node_color, status_style};
use crate::app::App;

/// Draw the Cluster view into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let n_assign = app
        .cluster
        .plan
        .as_ref()
        .map(|p| p.assignments.len())
        .unwrap_or(0) as u16;
    let plan_h = (n_assign.max(1) + 4).min(area.height / 2 + 2);
    let [plan_area, net_area] =
        Layout::vertical([Constraint::Length(plan_h), Constraint::Min(0)]).areas(area);
    draw_plan(f, app, plan_area);
    draw_network(f, app, net_area);
}

/// Owner index of each of `width` cells over `n_layers` layers.
pub fn bar_cells(assign: &[(u32, u32)], n_layers: u32, width: u16) -> Vec<Option<usize>> {
    (0..width as u32)
        .map(|x| {
            let layer = (x as u64 * n_layers as u64 / width.max(1) as u64) as u32;
            assign.iter().position(|(s, e)| layer >= *s && layer < *e)
        })
        .collect()
}

fn draw_plan(f: &mut Frame, app: &App, area: Rect) {
    let Some(plan) = &app.cluster.plan else {
        f.render_widget(
            Paragraph::new(dim(
                "No layer plan yet (no agent answered, or the plan is incomplete).",
            ))
            .block(Block::bordered().title(" Layer plan ")),
            area,
        );
        return;
    };
    let block = Block::bordered().title(format!(
        " Layer plan · {} · {} layers · v{:x} ",
        plan.model, plan.n_layers, plan.version
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let ranges: Vec<(u32, u32)> = plan.assignments.iter().map(|a| (a.start, a.end)).collect();
    let colors: Vec<Color> = plan
        .assignments
        .iter()
        .map(|a| node_color(app, &a.node_id))
        .collect();
    let bar: Vec<Span> = bar_cells(&ranges, plan.n_layers, inner.width)
        .into_iter()
        .map(|o| match o {
            Some(i) => Span::styled("█", Style::new().fg(colors[i])),
            None => Span::styled("░", Style::new().fg(Color::DarkGray)),
        })
        .collect();
    let mut lines = vec![Line::from(bar), scale(plan.n_layers, inner.width)];
    for (a, c) in plan.assignments.iter().zip(&colors) {
        let st = app.cluster.nodes.get(&a.node_id).map(|n| n.status());
        let mut spans = vec![
            Span::styled("■ ", Style::new().fg(*c)),
            Span::styled(format!("{:<12}", a.node_id), Style::new().fg(*c)),
            Span::raw(format!(
                " {:>2}-{:<2} ({:>2}) ",
                a.start,
                a.end,
                a.end.saturating_sub(a.start)
            )),
        ];
        if let Some(st) = st {
            spans.push(Span::styled(format!("{:<7}", st.label()), status_style(st)));
        }
        spans.push(Span::raw(format!(" {}", a.api_addr)));
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// Layer numbers under the bar: 0, the middle and the end.
fn scale(n_layers: u32, width: u16) -> Line<'static> {
    let w = width as usize;
    let mut s = vec![' '; w];
    let mut put = |pos: usize, text: String| {
        let start = pos.min(w.saturating_sub(text.len()));
        for (i, ch) in text.chars().enumerate() {
            if let Some(c) = s.get_mut(start + i) {
                *c = ch;
            }
        }
    };
    put(0, "0".into());
    put(w / 2, (n_layers / 2).to_string());
    put(w, n_layers.to_string());
    dim(s.into_iter().collect::<String>())
}

fn draw_network(f: &mut Frame, app: &App, area: Rect) {
    let mut rows = Vec::new();
    for n in app.cluster.nodes.values() {
        let Some(m) = &n.metrics else { continue };
        for p in &m.peers {
            let rate = n.peer_rates.get(&p.peer_id).copied().unwrap_or_default();
            rows.push(Row::new(vec![
                Span::styled(n.id.clone(), Style::new().fg(node_color(app, &n.id))),
                Span::styled(
                    p.peer_id.clone(),
                    Style::new().fg(node_color(app, &p.peer_id)),
                ),
                Span::raw(format!("{:.1}", p.hop_latency_ms_avg)),
                Span::raw(format!("{:.1}", p.hop_latency_ms_p50)),
                Span::raw(format!("{:.1}", p.hop_latency_ms_p99)),
                Span::raw(format!("{}/s", fmt_bytes(rate.sent_per_s as u64))),
                Span::raw(format!("{}/s", fmt_bytes(rate.recv_per_s as u64))),
                Span::raw(fmt_bytes(p.bytes_sent)),
            ]));
        }
    }
    let block = Block::bordered().title(" Network · pipeline hops (latency ms) ");
    if rows.is_empty() {
        f.render_widget(
            Paragraph::new(dim(
                "No pipeline traffic yet: send a chat prompt to see hops.",
            ))
            .block(block),
            area,
        );
        return;
    }
    let widths = [
        Constraint::Min(8),
        Constraint::Min(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header(&[
                "FROM", "TO", "AVG", "P50", "P99", "SENT", "RECV", "TOTAL",
            ]))
            .block(block),
        area,
    );
}

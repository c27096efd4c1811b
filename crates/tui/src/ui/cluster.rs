//! Cluster view: the layer plan as one bar over all layers, coloured by agent, and
//! the pipeline links a token travels with their latency and traffic.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::{dim, fit_widths, fmt_bytes, header, node_color, status_style};
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
        " Layer plan · {} · {} layers · plan {} ",
        plan.model,
        plan.n_layers,
        proto::fmt_plan(plan.version)
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
    let id_w = plan
        .assignments
        .iter()
        .map(|a| a.node_id.chars().count())
        .max()
        .unwrap_or(0);
    let range_w = plan
        .assignments
        .iter()
        .map(|a| proto::fmt_layers(a.start.into(), a.end.into()).len())
        .max()
        .unwrap_or(0);
    for (a, c) in plan.assignments.iter().zip(&colors) {
        let st = app.cluster.nodes.get(&a.node_id).map(|n| n.status());
        let n = a.end.saturating_sub(a.start);
        let mut spans = vec![
            Span::styled("■ ", Style::new().fg(*c)),
            Span::styled(format!("{:<id_w$}", a.node_id), Style::new().fg(*c)),
            Span::raw(format!(
                "  {:<range_w$} {:>3} layer{} ",
                proto::fmt_layers(a.start.into(), a.end.into()),
                n,
                if n == 1 { " " } else { "s" }
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

/// Header of the links table.
const LINK_COLUMNS: [&str; 7] = ["FROM", "TO STAGE", "AVG", "P50", "P99", "SENT/S", "TOTAL"];

/// The pipeline links a token travels, as the agents report them: one row per link an
/// agent sends on and times (`round_trips` > 0), in layer order of sender and receiver.
/// What an agent only receives is the sender's row, not a second one with empty
/// latencies; idle rates read `-` rather than `0B/s`.
fn draw_network(f: &mut Frame, app: &App, area: Rect) {
    let start_of = |id: &str| {
        app.cluster
            .plan
            .as_ref()
            .and_then(|p| p.assignments.iter().find(|a| a.node_id == id))
            .map(|a| (a.start, a.end))
    };
    let mut links = Vec::new();
    for n in app.cluster.nodes.values() {
        let Some(m) = &n.metrics else { continue };
        for p in m.peers.iter().filter(|p| p.round_trips > 0) {
            let link = n.links.get(&p.peer_id).cloned().unwrap_or_default();
            links.push((n.id.clone(), p.clone(), link));
        }
    }
    links.sort_by_key(|(from, p, _)| {
        (
            start_of(from),
            from.clone(),
            start_of(&p.peer_id),
            p.peer_id.clone(),
        )
    });
    let texts: Vec<Vec<String>> = links
        .iter()
        .map(|(from, p, l)| {
            let to = match start_of(&p.peer_id) {
                Some((s, e)) => format!("{} {}", p.peer_id, proto::fmt_layers(s.into(), e.into())),
                None => p.peer_id.clone(),
            };
            let bytes = |r: f64| {
                if r > 0.0 {
                    format!("{}/s", fmt_bytes(r as u64))
                } else {
                    "-".into()
                }
            };
            vec![
                from.clone(),
                to,
                format!("{:.1}", p.hop_latency_ms_avg),
                format!("{:.1}", p.hop_latency_ms_p50),
                format!("{:.1}", p.hop_latency_ms_p99),
                bytes(l.out_bytes.per_second()),
                fmt_bytes(p.bytes_sent),
            ]
        })
        .collect();
    let block =
        Block::bordered().title(" Links a token travels · round trip measured by the sender (ms) ");
    if texts.is_empty() {
        f.render_widget(
            Paragraph::new(dim(
                "No pipeline traffic yet: send a chat prompt to see the links a token travels.",
            ))
            .block(block),
            area,
        );
        return;
    }
    let widths = fit_widths(&LINK_COLUMNS, &texts);
    let rows = links.iter().zip(texts).map(|((from, p, _), cells)| {
        Row::new(cells.into_iter().enumerate().map(|(i, c)| match i {
            0 => Span::styled(c, Style::new().fg(node_color(app, from))),
            1 => Span::styled(c, Style::new().fg(node_color(app, &p.peer_id))),
            _ => Span::raw(c),
        }))
    });
    f.render_widget(
        Table::new(rows, widths)
            .header(header(&LINK_COLUMNS))
            .column_spacing(2)
            .block(block),
        area,
    );
}

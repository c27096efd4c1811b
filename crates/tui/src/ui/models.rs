//! Models view: the models the cluster serves, which agent holds which layers, and
//! what each agent says it serves.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{dim, fit_widths, fmt_bytes, header, node_color, status_style};
use crate::app::App;

/// Draw the Models view into `area`.
pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let models = &app.cluster.models;
    let top_h = (models.len().max(1) as u16 + 3).min(area.height / 2);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(top_h), Constraint::Min(0)]).areas(area);
    if models.is_empty() {
        f.render_widget(
            Paragraph::new(dim("No models listed yet.")).block(Block::bordered().title(" Models ")),
            top,
        );
    } else {
        const COLUMNS: [&str; 7] = ["ID", "ARCH", "LAYERS", "CTX", "HIDDEN", "VOCAB", "SIZE"];
        let texts: Vec<Vec<String>> = models
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    m.architecture.clone(),
                    m.n_layers.to_string(),
                    m.context_length.to_string(),
                    m.hidden_size.to_string(),
                    m.vocab_size.to_string(),
                    fmt_bytes(m.file_bytes),
                ]
            })
            .collect();
        let widths = fit_widths(&COLUMNS, &texts);
        let table = Table::new(texts.into_iter().map(Row::new), widths)
            .header(header(&COLUMNS))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(format!(" Models ({}) ", models.len())));
        let mut st = TableState::default().with_selected(Some(app.selected));
        f.render_stateful_widget(table, top, &mut st);
    }
    draw_served(f, app, bottom);
}

/// Per agent: status, layers of the selected model it holds, and its models.
fn draw_served(f: &mut Frame, app: &App, area: Rect) {
    const COLUMNS: [&str; 4] = ["NODE", "STATUS", "LAYERS", "MODELS"];
    let model = app.cluster.models.get(app.selected);
    let texts: Vec<Vec<String>> = app
        .cluster
        .nodes
        .values()
        .map(|n| {
            let shard = model
                .and_then(|m| m.shards.iter().find(|s| s.node_id == n.id))
                .and_then(|s| s.layers)
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into());
            let served = n
                .info
                .as_ref()
                .map(|i| i.models.clone())
                .or_else(|| n.advert.as_ref().map(|a| a.models.clone()))
                .unwrap_or_default()
                .join(", ");
            vec![n.id.clone(), n.status().label().to_string(), shard, served]
        })
        .collect();
    let widths = fit_widths(&COLUMNS, &texts);
    let rows = app.cluster.nodes.values().zip(texts).map(|(n, c)| {
        let st = n.status();
        let [id, status, shard, served] = <[String; 4]>::try_from(c).unwrap_or_default();
        Row::new(vec![
            Span::styled(id, Style::new().fg(node_color(app, &n.id))),
            Span::styled(status, status_style(st)),
            Span::raw(shard),
            Span::raw(served),
        ])
    });
    let title = match model {
        Some(m) => format!(" Served by · layers of {} ", m.id),
        None => " Served by ".into(),
    };
    f.render_widget(
        Table::new(rows, widths)
            .header(header(&COLUMNS))
            .block(Block::bordered().title(title)),
        area,
    );
}

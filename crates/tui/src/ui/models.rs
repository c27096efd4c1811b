//! Models view: the models the cluster serves, which agent holds which layers, and
//! what each agent says it serves.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{dim, fmt_bytes, header, node_color, status_style};
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
        let rows = models.iter().map(|m| {
            Row::new(vec![
                m.id.clone(),
                m.architecture.clone(),
                m.n_layers.to_string(),
                m.context_length.to_string(),
                m.hidden_size.to_string(),
                m.vocab_size.to_string(),
                fmt_bytes(m.file_bytes),
            ])
        });
        let widths = [
            Constraint::Min(20),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
        ];
        let table = Table::new(rows, widths)
            .header(header(&[
                "ID", "ARCH", "LAYERS", "CTX", "HIDDEN", "VOCAB", "SIZE",
            ]))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(format!(" Models ({}) ", models.len())));
        let mut st = TableState::default().with_selected(Some(app.selected));
        f.render_stateful_widget(table, top, &mut st);
    }
    draw_served(f, app, bottom);
}

/// Per agent: status, layers of the selected model it holds, and its models.
fn draw_served(f: &mut Frame, app: &App, area: Rect) {
    let model = app.cluster.models.get(app.selected);
    let rows = app.cluster.nodes.values().map(|n| {
        let st = n.status();
        let shard = model
            .and_then(|m| m.shards.iter().find(|s| s.node_id == n.id))
            .and_then(|s| s.layers)
            .map(|l| format!("{}-{}", l.start, l.end))
            .unwrap_or_else(|| "-".into());
        let served = n
            .info
            .as_ref()
            .map(|i| i.models.clone())
            .or_else(|| n.advert.as_ref().map(|a| a.models.clone()))
            .unwrap_or_default()
            .join(", ");
        Row::new(vec![
            Span::styled(n.id.clone(), Style::new().fg(node_color(app, &n.id))),
            Span::styled(st.label(), status_style(st)),
            Span::raw(shard),
            Span::raw(served),
        ])
    });
    let title = match model {
        Some(m) => format!(" Served by · layers of {} ", m.id),
        None => " Served by ".into(),
    };
    let widths = [
        Constraint::Min(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Min(20),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header(&["NODE", "STATUS", "LAYERS", "MODELS"]))
            .block(Block::bordered().title(title)),
        area,
    );
}

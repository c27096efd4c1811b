//! Application state and key handling: pure (no I/O), so it is unit-tested directly.
//! Keys produce [`Action`]s that `main` carries out (quit, send, cancel).

mod chat;
mod cluster;

use std::time::Instant;

use proto::v1 as pb;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

pub use chat::{Chat, Settings, Turn, MAX_TOKENS, TEMPERATURES, TOP_P};
pub use cluster::{Cluster, Link, NodeView, Rate, Status, HISTORY, RATE_WINDOW_MS};

use crate::client::Update;

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Every agent with its resources and trends.
    Nodes,
    /// Layer plan and network.
    Cluster,
    /// Prompt and streamed answer.
    Chat,
    /// Models and shards.
    Models,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Tab; 4] = [Tab::Nodes, Tab::Cluster, Tab::Chat, Tab::Models];

    /// Title shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Nodes => "Nodes",
            Tab::Cluster => "Cluster",
            Tab::Chat => "Chat",
            Tab::Models => "Models",
        }
    }

    /// Position in [`Tab::ALL`].
    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, delta: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + delta).rem_euclid(n) as usize]
    }
}

/// What `main` must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing.
    None,
    /// Leave the TUI.
    Quit,
    /// Start a generation on the agent at `addr`.
    Send {
        /// Agent API address.
        addr: String,
        /// The request.
        request: Box<pb::GenerateRequest>,
    },
    /// Cancel the running generation.
    Cancel,
}

/// The whole UI state.
#[derive(Debug, Clone)]
pub struct App {
    /// Current view.
    pub tab: Tab,
    /// Selected row in the Nodes / Models lists.
    pub selected: usize,
    /// Help overlay shown.
    pub show_help: bool,
    /// Cluster state.
    pub cluster: Cluster,
    /// Chat state.
    pub chat: Chat,
    /// Where logs go (shown in help).
    pub log_file: String,
}

impl Default for App {
    fn default() -> Self {
        Self::new("")
    }
}

impl App {
    /// Fresh state; `log_file` is shown in the help overlay.
    pub fn new(log_file: &str) -> Self {
        Self {
            tab: Tab::Nodes,
            selected: 0,
            show_help: false,
            cluster: Cluster::default(),
            chat: Chat::default(),
            log_file: log_file.to_string(),
        }
    }

    /// Apply a background update received at `now`.
    pub fn on_update(&mut self, u: Update, now: Instant) {
        match u {
            Update::Discovered { mode, addrs } => {
                self.cluster.mode = mode;
                self.cluster.discovered = addrs;
            }
            Update::Node {
                addr,
                info,
                metrics,
            } => self.cluster.node_answered(&addr, *info, *metrics),
            Update::NodeDown { addr, error } => self.cluster.node_down(&addr, error),
            Update::Members { members, plan, .. } => self.cluster.members(members, plan),
            Update::Models(m) => self.cluster.models = m,
            Update::Chat(ev) => self.chat.on_event(ev, now),
        }
        self.clamp_selection();
    }

    /// Number of rows of the current list.
    fn rows(&self) -> usize {
        match self.tab {
            Tab::Nodes | Tab::Cluster => self.cluster.nodes.len(),
            Tab::Models => self.cluster.models.len(),
            Tab::Chat => 0,
        }
    }

    fn clamp_selection(&mut self) {
        self.selected = self.selected.min(self.rows().saturating_sub(1));
    }

    fn switch(&mut self, tab: Tab) {
        self.tab = tab;
        self.clamp_selection();
    }

    /// Id of the node selected in the Nodes view.
    pub fn selected_node(&self) -> Option<&NodeView> {
        self.cluster.nodes.values().nth(self.selected)
    }

    /// Handle a key pressed at `now`.
    pub fn on_key(&mut self, key: KeyEvent, now: Instant) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.show_help {
            if matches!(key.code, KeyCode::Char('q')) && self.tab != Tab::Chat {
                return Action::Quit;
            }
            self.show_help = false;
            return Action::None;
        }
        match key.code {
            KeyCode::Tab | KeyCode::Right => {
                self.switch(self.tab.step(1));
                return Action::None;
            }
            KeyCode::BackTab | KeyCode::Left => {
                self.switch(self.tab.step(-1));
                return Action::None;
            }
            KeyCode::F(1) => {
                self.show_help = true;
                return Action::None;
            }
            _ => {}
        }
        if self.tab == Tab::Chat {
            return self.chat_key(key, ctrl, now);
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Char('j') | KeyCode::Down => {
                self.selected = (self.selected + 1).min(self.rows().saturating_sub(1));
            }
            KeyCode::Char('k') | KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = self.rows().saturating_sub(1),
            KeyCode::Char(c @ '1'..='4') => self.switch(Tab::ALL[c as usize - '1' as usize]),
            KeyCode::Enter if self.tab == Tab::Nodes => self.switch(Tab::Chat),
            _ => {}
        }
        Action::None
    }

    fn chat_key(&mut self, key: KeyEvent, ctrl: bool, now: Instant) -> Action {
        let chat = &mut self.chat;
        if ctrl {
            match key.code {
                KeyCode::Char('t') => {
                    chat.settings.temperature = (chat.settings.temperature + 1) % TEMPERATURES.len()
                }
                KeyCode::Char('n') => {
                    chat.settings.max_tokens = (chat.settings.max_tokens + 1) % MAX_TOKENS.len()
                }
                KeyCode::Char('p') => chat.settings.top_p = (chat.settings.top_p + 1) % TOP_P.len(),
                KeyCode::Char('o') => {
                    let ids: Vec<String> =
                        self.cluster.models.iter().map(|m| m.id.clone()).collect();
                    chat.next_model(&ids);
                }
                KeyCode::Char('l') if !chat.streaming => {
                    chat.transcript.clear();
                    chat.error = None;
                }
                KeyCode::Char('u') => chat.input.clear(),
                _ => {}
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Enter => {
                let prefer = self.selected_node().map(|n| n.id.clone());
                let Some(addr) = self.cluster.entry_addr(prefer.as_deref()) else {
                    if !self.chat.input.trim().is_empty() {
                        self.chat.error = Some("no agent is reachable".into());
                    }
                    return Action::None;
                };
                match self.chat.begin(addr.clone(), now) {
                    Some(request) => Action::Send {
                        addr,
                        request: Box::new(request),
                    },
                    None => Action::None,
                }
            }
            KeyCode::Esc if chat.streaming => {
                chat.cancel();
                Action::Cancel
            }
            KeyCode::Esc => {
                chat.input.clear();
                Action::None
            }
            KeyCode::Backspace => {
                chat.input.pop();
                Action::None
            }
            KeyCode::Up | KeyCode::PageUp => {
                chat.scroll =
                    chat.scroll
                        .saturating_add(if key.code == KeyCode::Up { 1 } else { 10 });
                Action::None
            }
            KeyCode::Down | KeyCode::PageDown => {
                chat.scroll =
                    chat.scroll
                        .saturating_sub(if key.code == KeyCode::Down { 1 } else { 10 });
                Action::None
            }
            KeyCode::Char(c) if !c.is_control() => {
                if chat.input.len() < chat::MAX_INPUT {
                    chat.input.push(c);
                }
                Action::None
            }
            _ => Action::None,
        }
    }

    /// Key hints for the footer of the current view.
    pub fn footer_hints(&self) -> &'static str {
        if self.show_help {
            return "any key: close help";
        }
        match self.tab {
            Tab::Chat => {
                "Enter send Esc stop ^T temp ^P top-p ^N max ^O model Tab view F1 help ^C quit"
            }
            _ => "Tab/←→ view  j/k ↑↓ move  Enter chat  ? help  q quit",
        }
    }
}

#[cfg(test)]
mod tests;

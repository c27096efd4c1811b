//! Admission of requests entered at this agent, by KV-cache budget: a request reserves
//! the positions it may fill (prompt plus `max_tokens`) and runs when they fit and fewer
//! than `max_running` run; others wait in arrival order (the first in line is never
//! overtaken). Only a full waiting line refuses a request (429).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

struct Inner {
    budget: usize,
    reserved: usize,
    running: usize,
    max_running: usize,
    line: VecDeque<u64>,
    next_id: u64,
}

impl Inner {
    /// Whether `need` more positions may run now (a request larger than the whole
    /// budget runs alone rather than never).
    fn fits(&self, need: usize) -> bool {
        self.running < self.max_running
            && (self.reserved == 0 || self.reserved + need <= self.budget)
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Admission control of one agent.
pub struct Admission {
    shared: Shared,
    pub max_waiting: usize,
}

/// A waiting request's place in line; dropping it leaves the line.
pub struct Ticket {
    id: u64,
    need: usize,
    shared: Shared,
    admitted: bool,
}

/// A running request's reservation; dropping it frees the positions.
pub struct Slot {
    need: usize,
    shared: Shared,
}

impl Admission {
    /// `budget` KV positions (changed later with [`Admission::set_budget`]).
    pub fn new(budget: usize, max_running: usize, max_waiting: usize) -> Self {
        Self {
            shared: Shared {
                inner: Arc::new(Mutex::new(Inner {
                    budget,
                    reserved: 0,
                    running: 0,
                    max_running: max_running.max(1),
                    line: VecDeque::new(),
                    next_id: 0,
                })),
                changed: Arc::new(Notify::new()),
            },
            max_waiting,
        }
    }

    /// Sets the KV positions requests may reserve in all.
    pub fn set_budget(&self, budget: usize) {
        self.shared.lock().budget = budget;
        self.shared.changed.notify_waiters();
    }

    /// Requests waiting and running now.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.shared.lock();
        (g.line.len(), g.running)
    }

    /// Joins the line for `need` positions, or says why not (429).
    pub fn try_admit(&self, need: usize) -> Result<Ticket, String> {
        let mut g = self.shared.lock();
        let runs_now = g.line.is_empty() && g.fits(need);
        if !runs_now && g.line.len() >= self.max_waiting {
            return Err(format!(
                "{} requests running (limit {}) and {} waiting (limit {}); retry later",
                g.running,
                g.max_running,
                g.line.len(),
                self.max_waiting
            ));
        }
        let id = g.next_id;
        g.next_id += 1;
        g.line.push_back(id);
        Ok(Ticket {
            id,
            need,
            shared: self.shared.clone(),
            admitted: false,
        })
    }
}

impl Ticket {
    /// Waits until this request is first in line and its positions fit.
    pub async fn slot(mut self) -> Slot {
        loop {
            let notified = self.shared.changed.notified();
            {
                let mut g = self.shared.lock();
                if g.line.front() == Some(&self.id) && g.fits(self.need) {
                    g.line.pop_front();
                    g.running += 1;
                    g.reserved += self.need;
                    self.admitted = true;
                    drop(g);
                    self.shared.changed.notify_waiters();
                    return Slot {
                        need: self.need,
                        shared: self.shared.clone(),
                    };
                }
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.admitted {
            self.shared.lock().line.retain(|id| *id != self.id);
            self.shared.changed.notify_waiters();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.running -= 1;
        g.reserved -= self.need;
        drop(g);
        self.shared.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn budget_order_and_line_limit() {
        let a = Admission::new(100, 8, 1);
        let s1 = a.try_admit(60).unwrap().slot().await;
        // 60 + 50 > 100: the second waits, in line.
        let t2 = a.try_admit(50).unwrap();
        let e = a.try_admit(10).err().expect("the line holds one");
        assert!(e.contains("1 waiting (limit 1)"), "{e}");
        let mut waiting = Box::pin(t2.slot());
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "admitted beyond the budget"
        );
        assert_eq!(a.counts(), (1, 1));
        drop(s1);
        let s2 = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap();
        assert_eq!(a.counts(), (0, 1));
        // Larger than the whole budget: runs alone.
        drop(s2);
        let big = a.try_admit(500).unwrap().slot().await;
        assert_eq!(a.counts(), (0, 1));
        drop(big);
    }

    #[tokio::test]
    async fn running_limit_and_leaving_the_line() {
        let a = Admission::new(1000, 1, 4);
        let s1 = a.try_admit(1).unwrap().slot().await;
        let t2 = a.try_admit(1).unwrap();
        let t3 = a.try_admit(1).unwrap();
        drop(t2); // gives up while waiting
        assert_eq!(a.counts(), (1, 1));
        let third = tokio::spawn(async move { t3.slot().await });
        drop(s1);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .unwrap()
            .unwrap();
    }
}

//! Bounded admission: up to `running` generation requests run at once and up to
//! `waiting` more wait for a slot; beyond that a request is refused (429).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission control of one agent.
pub struct Admission {
    slots: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    pub running: usize,
    pub waiting: usize,
}

/// An admitted request (running or waiting); frees its place on drop.
pub struct Ticket {
    slots: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
}

impl Admission {
    pub fn new(running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        Self {
            slots: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(AtomicUsize::new(0)),
            running,
            waiting,
        }
    }

    /// Requests admitted now (running plus waiting).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Admit a request, or say why not.
    pub fn try_admit(&self) -> Result<Ticket, String> {
        let cap = self.running + self.waiting;
        let prev = self.admitted.fetch_add(1, Ordering::SeqCst);
        if prev >= cap {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{} requests running (limit {}) and {} waiting (limit {}); retry later",
                prev.min(self.running),
                self.running,
                prev.saturating_sub(self.running),
                self.waiting
            ));
        }
        Ok(Ticket {
            slots: self.slots.clone(),
            admitted: self.admitted.clone(),
        })
    }
}

impl Ticket {
    /// Wait for a running slot (in admission order: tokio's semaphore is fair).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_running_and_waiting() {
        let a = Admission::new(1, 1);
        let t1 = a.try_admit().unwrap();
        let t2 = a.try_admit().unwrap();
        let e = a.try_admit().err().expect("third must be refused");
        assert!(
            e.contains("running (limit 1) and 1 waiting (limit 1)"),
            "{e}"
        );
        let p1 = t1.slot().await.unwrap();
        // The second waits while the first runs.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), t2.slot()).await;
        assert!(waiting.is_err());
        drop(p1);
        drop(t1);
        assert!(t2.slot().await.is_some());
        assert_eq!(a.admitted(), 1);
        let _t3 = a.try_admit().unwrap();
        drop(t2);
        assert_eq!(a.admitted(), 1);
    }
}

//! The bounded queue between everyone who sends to a logged-in user and the
//! session that writes to that user's socket.
//!
//! Policy when full: the receiver is too slow. The sender stores the message
//! offline and asks the session to close; the session stores whatever is
//! still queued. Nothing is lost and no sender ever waits.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A pushed chat message, serialized once and shared by every receiver.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub mid: i64,
    /// The frame: JSON text followed by `\n`.
    frame: Arc<str>,
}

impl Pushed {
    pub fn new(mid: i64, json: String) -> Self {
        let mut frame = json;
        frame.push('\n');
        Self {
            mid,
            frame: frame.into(),
        }
    }

    /// The bytes to write, terminator included.
    pub fn frame(&self) -> &[u8] {
        self.frame.as_bytes()
    }

    /// The JSON text, as stored for offline delivery.
    pub fn payload(&self) -> &str {
        &self.frame[..self.frame.len() - 1]
    }
}

#[derive(Debug)]
pub enum Outbound {
    Push(Pushed),
    /// Offline messages were stored for this user after its login read them:
    /// fetch and write them (see `command::login` on why this closes the race).
    SweepOffline,
}

/// What became of an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the session has been told to close.
    Full,
    /// The session is closing or gone.
    Gone,
}

/// The sending side, kept in the registry.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    evict: CancellationToken,
}

impl SessionHandle {
    /// Asks the session to close (its user is logged out, queued messages stored).
    pub fn evict(&self) {
        self.evict.cancel();
    }

    pub fn offer(&self, item: Outbound) -> Offer {
        match self.tx.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.evict();
                Offer::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }
}

/// The receiving side, owned by the session while its user is logged in.
#[derive(Debug)]
pub struct Mailbox {
    pub rx: mpsc::Receiver<Outbound>,
    /// Cancelled when a sender found the queue full, or when the cluster
    /// gave this user's login to another server: the session must close.
    pub evict: CancellationToken,
}

impl Mailbox {
    /// Stops accepting and returns the pushes nobody wrote, oldest first.
    pub fn close_and_drain(mut self) -> Vec<Pushed> {
        self.rx.close();
        let mut undelivered = Vec::new();
        while let Ok(item) = self.rx.try_recv() {
            if let Outbound::Push(pushed) = item {
                undelivered.push(pushed);
            }
        }
        undelivered
    }
}

pub fn mailbox(conn_id: u64, capacity: usize) -> (SessionHandle, Mailbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let evict = CancellationToken::new();
    (
        SessionHandle {
            conn_id,
            tx,
            evict: evict.clone(),
        },
        Mailbox { rx, evict },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_flags_the_session_and_closed_queue_is_gone() {
        let (handle, mailbox) = mailbox(1, 1);
        let push = Pushed::new(1, "{}".into());
        assert_eq!(handle.offer(Outbound::Push(push.clone())), Offer::Queued);
        assert_eq!(handle.offer(Outbound::Push(push.clone())), Offer::Full);
        assert!(mailbox.evict.is_cancelled());
        let undelivered = mailbox.close_and_drain();
        assert_eq!(undelivered.len(), 1);
        assert_eq!(undelivered[0].payload(), "{}");
        assert_eq!(handle.offer(Outbound::Push(push)), Offer::Gone);
    }
}

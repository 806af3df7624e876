//! The bounded queue between everyone who sends to a logged-in user and the
//! session that writes to that user's socket.
//!
//! Policy when full: the receiver is too slow. The sender stores the message
//! offline and asks the session to close; the session stores whatever is
//! still queued. Nothing is lost and no sender ever waits.

use std::sync::{Arc, OnceLock};

use protocol::{Chat, Version};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A pushed chat message, serialized once per protocol version and shared
/// by every receiver. The v2 text (with `mid` and `ts`) is what is stored
/// and sent between servers; the v1 rendering, which drops those fields for
/// the original client, is made on first use only.
#[derive(Debug, Clone)]
pub struct Pushed(Arc<Rendered>);

#[derive(Debug)]
struct Rendered {
    mid: i64,
    /// The v2 frame: JSON text followed by `\n`.
    v2: Box<str>,
    v1: OnceLock<Box<[u8]>>,
}

impl Pushed {
    pub fn new(chat: &Chat) -> Self {
        Self::from_json(chat.mid.unwrap_or(0), chat.to_json(Version::V2))
    }

    /// A push from its stored (v2) JSON text.
    pub fn from_json(mid: i64, json: String) -> Self {
        let mut frame = json;
        frame.push('\n');
        Pushed(Arc::new(Rendered {
            mid,
            v2: frame.into_boxed_str(),
            v1: OnceLock::new(),
        }))
    }

    pub fn mid(&self) -> i64 {
        self.0.mid
    }

    /// The bytes to write to a connection speaking `version`, terminator
    /// included.
    pub fn frame(&self, version: Version) -> &[u8] {
        match version {
            Version::V2 => self.0.v2.as_bytes(),
            Version::V1 => self.0.v1.get_or_init(|| v1_frame(self.payload())),
        }
    }

    /// The v2 JSON text, as stored for offline delivery.
    pub fn payload(&self) -> &str {
        &self.0.v2[..self.0.v2.len() - 1]
    }
}

/// The v1 frame for a stored v2 push. Stored text is always our own JSON;
/// should it not read back, it is sent as it is rather than lost.
pub fn v1_frame(payload: &str) -> Box<[u8]> {
    let mut frame = match Chat::from_json(payload) {
        Ok(chat) => chat.to_json(Version::V1),
        Err(error) => {
            tracing::warn!(%error, "a stored push does not read back; sent unchanged");
            payload.to_owned()
        }
    }
    .into_bytes();
    frame.push(b'\n');
    frame.into_boxed_slice()
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
        let push = Pushed::from_json(1, "{}".into());
        assert_eq!(handle.offer(Outbound::Push(push.clone())), Offer::Queued);
        assert_eq!(handle.offer(Outbound::Push(push.clone())), Offer::Full);
        assert!(mailbox.evict.is_cancelled());
        let undelivered = mailbox.close_and_drain();
        assert_eq!(undelivered.len(), 1);
        assert_eq!(undelivered[0].payload(), "{}");
        assert_eq!(handle.offer(Outbound::Push(push)), Offer::Gone);
    }

    #[test]
    fn v1_frames_drop_mid_and_ts() {
        let chat = Chat {
            target: protocol::ChatTarget::User(2),
            from: 1,
            name: "n".into(),
            msg: "m".into(),
            time: "t".into(),
            mid: Some(7),
            ts: Some(8),
            seq: None,
        };
        let push = Pushed::new(&chat);
        assert_eq!(push.mid(), 7);
        assert!(push.frame(Version::V2).ends_with(b",\"mid\":7,\"ts\":8}\n"));
        assert_eq!(
            push.frame(Version::V1),
            b"{\"msgid\":6,\"id\":1,\"name\":\"n\",\"toid\":2,\"msg\":\"m\",\"time\":\"t\"}\n"
        );
    }
}

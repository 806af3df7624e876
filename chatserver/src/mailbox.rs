//! The bounded queue between everyone who sends to a logged-in user and the
//! session that writes to that user's socket.
//!
//! Every message is stored in the receiver's inbox before it is offered
//! here, so the queue is only a fast path. Policy when full (in frames or
//! in bytes): the push is not queued and the session is marked behind; once
//! it has written what is queued it reads the rest from its inbox. No
//! sender waits, memory per receiver stays bounded, nothing is lost.
//! Notices (NOTICE, best effort and not stored) are dropped when the
//! queue is full.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use protocol::{Chat, Version};

use tokio_util::sync::CancellationToken;

/// A pushed chat message, serialized once and shared by every receiver. The
/// v2 text (with `mid` and `ts`, without the per-receiver `seq`) is what is
/// stored and sent between servers; the v1 rendering, which drops those
/// fields for the original client, is made on first use only.
#[derive(Debug, Clone)]
pub struct Pushed(Arc<Rendered>);

#[derive(Debug)]
struct Rendered {
    mid: i64,
    /// The v2 JSON text, without `seq` and without a terminator.
    v2: Arc<str>,
    v1: OnceLock<Box<[u8]>>,
}

impl Pushed {
    pub fn new(chat: &Chat) -> Self {
        Self::from_json(chat.mid.unwrap_or(0), chat.to_json(Version::V2).into())
    }

    /// A push from its stored (v2) JSON text.
    pub fn from_json(mid: i64, json: Arc<str>) -> Self {
        Pushed(Arc::new(Rendered {
            mid,
            v2: json,
            v1: OnceLock::new(),
        }))
    }

    pub fn mid(&self) -> i64 {
        self.0.mid
    }

    /// The v2 JSON text, as stored.
    pub fn payload(&self) -> &Arc<str> {
        &self.0.v2
    }

    /// Appends the frame for a connection speaking `version`; v2 frames
    /// carry the receiver's inbox `seq`.
    pub fn write_frame(&self, version: Version, seq: i64, out: &mut Vec<u8>) {
        match version {
            Version::V2 => v2_frame_into(&self.0.v2, seq, out),
            Version::V1 => out.extend_from_slice(self.0.v1.get_or_init(|| v1_frame(&self.0.v2))),
        }
    }

    /// Bytes this push holds in a queue.
    fn size(&self) -> usize {
        self.0.v2.len()
    }
}

/// Appends a stored v2 push with its `seq` and the terminator.
pub fn v2_frame_into(payload: &str, seq: i64, out: &mut Vec<u8>) {
    match payload.strip_suffix('}') {
        Some(open) => {
            out.extend_from_slice(open.as_bytes());
            out.extend_from_slice(b",\"seq\":");
            out.extend_from_slice(seq.to_string().as_bytes());
            out.extend_from_slice(b"}\n");
        }
        // Only our own JSON objects are stored; anything else goes as it is.
        None => {
            out.extend_from_slice(payload.as_bytes());
            out.push(b'\n');
        }
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
    /// A stored message, with its seq in this receiver's inbox.
    Push { pushed: Pushed, seq: i64 },
    /// Messages may be stored that never reached this queue (a lost cluster
    /// notification): read the inbox.
    CatchUp,
    /// A NOTICE for v2 sessions (v1 ones drop it).
    Notice(Notice),
}

/// A NOTICE rendered once for all its receivers.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The v2 JSON text, without terminator.
    pub json: Arc<str>,
    /// The user the receiver is now related to (a new friend, a new fellow
    /// member), who must hear of the receiver's logout.
    pub related: Option<i64>,
}

/// What became of an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the session reads it from its inbox later.
    Deferred,
    /// The session is closing or gone (the message waits in the inbox).
    Gone,
}

#[derive(Debug)]
struct Shared {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Something was not queued: the session must read its inbox.
    behind: AtomicBool,
}

impl Shared {
    fn taken(&self, item: Option<&Outbound>) {
        if let Some(Outbound::Push { pushed, .. }) = item {
            self.queued_bytes.fetch_sub(pushed.size(), Ordering::AcqRel);
        }
    }
}

/// The sending side, kept in the registry.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub conn_id: u64,
    tx: flume::Sender<Outbound>,
    evict: CancellationToken,
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Asks the session to close (its login moved to another server).
    pub fn evict(&self) {
        self.evict.cancel();
    }

    /// Queues a notice if there is room; best effort, so a full queue
    /// drops it (the next LOGIN_ACK has the truth).
    pub fn notify(&self, notice: Notice) {
        let _ = self.tx.try_send(Outbound::Notice(notice));
    }

    pub fn offer(&self, item: Outbound) -> Offer {
        if self.tx.is_disconnected() {
            return Offer::Gone;
        }
        let size = match &item {
            Outbound::Push { pushed, .. } => pushed.size(),
            Outbound::CatchUp | Outbound::Notice(_) => 0,
        };
        let queued = self.shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size > self.shared.max_bytes && queued > 0 {
            self.shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return self.defer();
        }
        match self.tx.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(flume::TrySendError::Full(_)) => {
                self.shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                self.defer()
            }
            Err(flume::TrySendError::Disconnected(_)) => Offer::Gone,
        }
    }

    /// Marks the session behind, then wakes it with a `CatchUp` if there is
    /// room for one; if not, the queue is not empty and the session looks
    /// at `behind` after its next item.
    fn defer(&self) -> Offer {
        self.shared.behind.store(true, Ordering::Release);
        let _ = self.tx.try_send(Outbound::CatchUp);
        Offer::Deferred
    }
}

/// The receiving side, owned by the session while its user is logged in.
#[derive(Debug)]
pub struct Mailbox {
    rx: flume::Receiver<Outbound>,
    /// Cancelled when the cluster gave this user's login to another server:
    /// the session must close.
    pub evict: CancellationToken,
    shared: Arc<Shared>,
}

impl Mailbox {
    /// The eviction token and the next item, borrowed together so that a
    /// session can wait for both at once.
    pub fn evict_and_recv(
        &mut self,
    ) -> (
        &CancellationToken,
        impl std::future::Future<Output = Option<Outbound>> + '_,
    ) {
        let (rx, shared) = (&mut self.rx, &self.shared);
        let next = async move {
            let item = rx.recv_async().await.ok();
            shared.taken(item.as_ref());
            item
        };
        (&self.evict, next)
    }

    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok();
        self.shared.taken(item.as_ref());
        item
    }

    /// Whether pushes were left out since the last call (then the inbox
    /// must be read).
    pub fn take_behind(&self) -> bool {
        self.shared.behind.swap(false, Ordering::AcqRel)
    }
}

pub fn mailbox(conn_id: u64, capacity: usize, max_bytes: usize) -> (SessionHandle, Mailbox) {
    // flume rather than tokio's mpsc: tokio allocates a block of 32 slots
    // for every channel up front (1.7 KiB per logged-in user with its
    // state), flume only what is queued.
    let (tx, rx) = flume::bounded(capacity);
    let evict = CancellationToken::new();
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        behind: AtomicBool::new(false),
    });
    (
        SessionHandle {
            conn_id,
            tx,
            evict: evict.clone(),
            shared: shared.clone(),
        },
        Mailbox { rx, evict, shared },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(json: &str) -> Outbound {
        Outbound::Push {
            pushed: Pushed::from_json(1, json.into()),
            seq: 1,
        }
    }

    #[tokio::test]
    async fn a_full_queue_defers_and_marks_the_session_behind() {
        let (handle, mut mailbox) = mailbox(1, 1, 1024);
        assert_eq!(handle.offer(push("{}")), Offer::Queued);
        assert_eq!(handle.offer(push("{}")), Offer::Deferred);
        assert!(mailbox.take_behind());
        assert!(!mailbox.take_behind(), "reported once");
        assert!(matches!(
            mailbox.evict_and_recv().1.await,
            Some(Outbound::Push { .. })
        ));
        drop(mailbox);
        assert_eq!(handle.offer(push("{}")), Offer::Gone);
    }

    #[tokio::test]
    async fn the_byte_bound_defers_but_always_admits_one_push() {
        let (handle, mut mailbox) = mailbox(1, 100, 10);
        let big = format!("{{\"m\":\"{}\"}}", "x".repeat(20));
        assert_eq!(
            handle.offer(push(&big)),
            Offer::Queued,
            "an empty queue takes any push"
        );
        assert_eq!(handle.offer(push("{}")), Offer::Deferred);
        assert!(mailbox.try_recv().is_some());
        assert_eq!(handle.offer(push("{}")), Offer::Queued, "room again");
    }

    #[test]
    fn v2_frames_carry_the_seq_and_v1_frames_drop_mid_and_ts() {
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
        let mut v2 = Vec::new();
        push.write_frame(Version::V2, 42, &mut v2);
        assert!(
            v2.ends_with(b",\"mid\":7,\"ts\":8,\"seq\":42}\n"),
            "{}",
            String::from_utf8_lossy(&v2)
        );
        let parsed: serde_json::Value = serde_json::from_slice(&v2).unwrap();
        assert_eq!(parsed["seq"], 42);
        let mut v1 = Vec::new();
        push.write_frame(Version::V1, 42, &mut v1);
        assert_eq!(
            v1,
            b"{\"msgid\":6,\"id\":1,\"name\":\"n\",\"toid\":2,\"msg\":\"m\",\"time\":\"t\"}\n"
        );
    }
}

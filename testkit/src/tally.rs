//! Counting deliveries of numbered messages (`msg` is "0", "1", ...): the
//! check that nothing is lost and nothing arrives twice.

use std::collections::BTreeMap;

use protocol::Chat;

/// How many copies of each numbered message a receiver saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    counts: BTreeMap<u32, u32>,
    last_seq: i64,
}

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one copy of `chat`; panics if its text is not a number.
    pub fn add(&mut self, chat: &Chat) {
        *self.counts.entry(number(chat)).or_default() += 1;
        self.last_seq = self.last_seq.max(chat.seq.unwrap_or(0));
    }

    /// The highest inbox `seq` seen: what a resuming client sends as `since`.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    pub fn add_all<'a>(&mut self, chats: impl IntoIterator<Item = &'a Chat>) {
        for chat in chats {
            self.add(chat);
        }
    }

    /// How many different messages were seen.
    pub fn distinct(&self) -> u32 {
        self.counts.len() as u32
    }

    /// True once any message numbered `n` or more was seen.
    pub fn reached(&self, n: u32) -> bool {
        self.counts
            .keys()
            .next_back()
            .is_some_and(|last| *last >= n)
    }

    /// Messages below `sent` never seen.
    pub fn missing(&self, sent: u32) -> Vec<u32> {
        (0..sent).filter(|n| !self.counts.contains_key(n)).collect()
    }

    /// Messages seen more than once.
    pub fn duplicates(&self) -> Vec<u32> {
        self.counts
            .iter()
            .filter(|(_, copies)| **copies > 1)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Asserts every message below `sent` was seen exactly once.
    #[track_caller]
    pub fn assert_each_once(&self, sent: u32) {
        assert!(
            self.missing(sent).is_empty(),
            "lost: {:?}",
            self.missing(sent)
        );
        assert!(
            self.duplicates().is_empty(),
            "delivered twice: {:?}",
            self.duplicates()
        );
    }
}

/// The number a numbered message carries.
pub fn number(chat: &Chat) -> u32 {
    chat.msg
        .parse()
        .unwrap_or_else(|_| panic!("not a numbered message: {chat:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ChatTarget;

    fn chat(n: u32) -> Chat {
        Chat {
            target: ChatTarget::User(1),
            from: 2,
            name: "s".into(),
            msg: n.to_string(),
            time: String::new(),
            mid: None,
            ts: None,
            seq: None,
        }
    }

    #[test]
    fn counts_lost_and_doubled() {
        let mut tally = Tally::new();
        tally.add_all(&[chat(0), chat(2), chat(2)]);
        assert_eq!(tally.missing(3), vec![1]);
        assert_eq!(tally.duplicates(), vec![2]);
        assert_eq!(tally.distinct(), 2);
        assert!(tally.reached(2) && !tally.reached(3));
    }
}

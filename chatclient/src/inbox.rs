//! The client's side of the v2 inbox: which `seq`s it has shown, so that a
//! message pushed twice (replayed after a reconnect, or by a live push that
//! raced the replay) is shown once, and what it may confirm with DELIVERED.
//!
//! Only what was shown is ever confirmed: the server deletes confirmed rows,
//! so confirming a message the client dropped (a frame too large, a crash
//! before printing) would lose it for good.

use std::collections::BTreeSet;

/// What this client holds of its inbox.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inbox {
    /// Every seq up to this one was shown (or does not exist).
    held: i64,
    /// Shown seqs above `held`: pushes that overtook an earlier one.
    above: BTreeSet<i64>,
    /// The seq of the last DELIVERED sent (or known to the server).
    confirmed: i64,
    /// A login without `since` answered with this `seq`: the server's cursor
    /// is unknown until the first push (see [`Inbox::accept`]).
    unanchored: Option<i64>,
}

impl Inbox {
    /// A new login without `since` (a first login, or after LOGOUT):
    /// `latest` is the LOGIN_ACK's `seq`.
    pub fn start_fresh(&mut self, latest: i64) {
        *self = Inbox {
            unanchored: Some(latest),
            ..Inbox::default()
        };
    }

    /// Forgets everything (logged out).
    pub fn clear(&mut self) {
        *self = Inbox::default();
    }

    /// The `since` to log in with: every seq up to it was shown.
    pub fn held(&self) -> i64 {
        self.held
    }

    /// A pushed message with this `seq` arrived: `true` if it is new (and
    /// is now counted as shown), `false` if it was shown already.
    pub fn accept(&mut self, seq: i64) -> bool {
        if let Some(latest) = self.unanchored.take() {
            // The server replays from its cursor + 1, oldest first, so the
            // first push is that seq; with no backlog the first push is live
            // (above `latest`) and the cursor was `latest`.
            let base = seq.min(latest + 1) - 1;
            self.held = self.held.max(base);
            self.confirmed = self.confirmed.max(base);
        }
        if seq <= self.held || !self.above.insert(seq) {
            return false;
        }
        self.advance();
        true
    }

    /// Every inbox message up to `latest` has been pushed (the reply to the
    /// first request after LOGIN comes after the whole backlog): a seq not
    /// seen up to there no longer exists (purged), so it is not waited for.
    pub fn settle(&mut self, latest: i64) {
        if let Some(unanchored) = self.unanchored.take() {
            // No push at all: the cursor was at the login's `seq`.
            self.confirmed = self.confirmed.max(unanchored);
        }
        self.held = self.held.max(latest);
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(&first) = self.above.first() {
            if first > self.held + 1 {
                break;
            }
            self.above.pop_first();
            self.held = self.held.max(first);
        }
    }

    /// Shown messages not yet confirmed.
    pub fn unconfirmed(&self) -> bool {
        self.held > self.confirmed
    }

    /// The seq to send in DELIVERED now, if any; it counts as sent.
    pub fn take_confirmation(&mut self) -> Option<i64> {
        if self.held > self.confirmed {
            self.confirmed = self.held;
            Some(self.held)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_and_the_cursor_only_covers_contiguous_seqs() {
        let mut inbox = Inbox::default();
        inbox.settle(0);
        assert!(inbox.accept(1));
        assert!(!inbox.accept(1));
        // 3 overtook 2: 3 is shown, but only 1 may be confirmed.
        assert!(inbox.accept(3));
        assert_eq!(inbox.held(), 1);
        assert_eq!(inbox.take_confirmation(), Some(1));
        assert_eq!(inbox.take_confirmation(), None);
        assert!(inbox.accept(2));
        assert!(!inbox.accept(3));
        assert_eq!(inbox.held(), 3);
        assert!(inbox.unconfirmed());
        assert_eq!(inbox.take_confirmation(), Some(3));
        assert!(!inbox.unconfirmed());
    }

    #[test]
    fn a_fresh_login_anchors_on_the_first_push() {
        // Cursor at 40 on the server, 50 in the inbox: replay starts at 41.
        let mut inbox = Inbox::default();
        inbox.start_fresh(50);
        assert!(inbox.accept(41));
        assert_eq!(inbox.held(), 41);
        assert_eq!(inbox.take_confirmation(), Some(41));

        // Nothing waiting: the first push is live, possibly out of order.
        inbox.start_fresh(50);
        assert!(inbox.accept(52));
        assert_eq!(inbox.held(), 50);
        assert!(!inbox.unconfirmed(), "50 was confirmed before");
        assert!(inbox.accept(51));
        assert_eq!(inbox.take_confirmation(), Some(52));

        // No push before the backlog's end.
        inbox.start_fresh(7);
        inbox.settle(7);
        assert_eq!(inbox.held(), 7);
        assert!(!inbox.unconfirmed());
    }

    #[test]
    fn settle_skips_seqs_that_no_longer_exist() {
        let mut inbox = Inbox::default();
        inbox.settle(0);
        assert!(inbox.accept(1));
        assert!(inbox.accept(4));
        inbox.settle(3);
        assert_eq!(inbox.held(), 4);
        assert!(!inbox.accept(2));
    }
}

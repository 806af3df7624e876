//! Test-only crate: cross-binary scenarios live in `tests/` (clients through
//! our balancer or a real Nginx to a chat cluster on MariaDB and Redis).
//! The scenarios they share are in `tests/common/`, the helpers in `testkit`.

//! Timing of calls to the server's dependencies (database, Redis): the
//! storage and bus code wrap each call in [`CallTimer::time`] with the name
//! of the operation, and whoever built the timer (the metrics) records how
//! long it took and whether it failed. SQL and Redis code see no metrics
//! types, and a timer built with [`CallTimer::default`] records nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receives one finished call: operation name, time taken, whether it failed.
pub type Record = dyn Fn(&'static str, Duration, bool) + Send + Sync;

/// A cheap, cloneable hook around dependency calls.
#[derive(Clone, Default)]
pub struct CallTimer(Option<Arc<Record>>);

impl std::fmt::Debug for CallTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallTimer")
    }
}

impl CallTimer {
    /// A timer that hands every finished call to `record`.
    pub fn new(record: impl Fn(&'static str, Duration, bool) + Send + Sync + 'static) -> Self {
        CallTimer(Some(Arc::new(record)))
    }

    /// Runs `call`, recording it as operation `op`.
    pub async fn time<T, E>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        if let Some(record) = &self.0 {
            record(op, started.elapsed(), result.is_err());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn each_call_is_recorded_with_its_outcome() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let timer = CallTimer::new(move |op, _, failed| log.lock().unwrap().push((op, failed)));
        let ok: Result<u8, ()> = timer.time("read", async { Ok(1) }).await;
        let err: Result<u8, ()> = timer.time("write", async { Err(()) }).await;
        assert_eq!((ok, err), (Ok(1), Err(())));
        assert_eq!(*seen.lock().unwrap(), [("read", false), ("write", true)]);
        let silent: Result<u8, ()> = CallTimer::default().time("x", async { Ok(2) }).await;
        assert_eq!(silent, Ok(2));
    }
}

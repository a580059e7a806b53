//! What the benchmarks share: a closed loop of concurrent clients and its figures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Throughput and latency of a closed loop.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Runs `clients` workers, each calling `op(client, n)` back to back for `duration`; `op`
/// answers whether the operation succeeded. Every call's latency is recorded.
pub async fn closed_loop<F, Fut>(clients: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (op, errors) = (op.clone(), errors.clone());
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut n = 0u64;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    if !op(client, n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = histogram.record(t.elapsed().as_micros() as u64);
                    n += 1;
                }
                histogram
            })
        })
        .collect();
    let mut total = new_histogram();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = total.add(h);
        }
    }
    Figures {
        ops_per_sec: total.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: total.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        errors: AtomicU64::load(&errors, Ordering::Relaxed),
    }
}

/// A latency histogram in microseconds (3 significant figures).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("histogram: {e}"))
}

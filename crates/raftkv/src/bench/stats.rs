//! Statistics: the latency window each client fills and the totals the
//! observer reads.

use super::*;

/// Latencies (µs) and counts since the last drain.
pub(super) struct Window {
    pub(super) hist: Histogram<u64>,
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) misses: u64,
}

impl Window {
    pub(super) fn new() -> Window {
        Window {
            // 1 µs .. 10 min, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ops: 0,
            errors: 0,
            misses: 0,
        }
    }

    /// Moves everything in `other` into `self`.
    pub(super) fn absorb(&mut self, other: &mut Window) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        other.hist.reset();
        self.ops += std::mem::take(&mut other.ops);
        self.errors += std::mem::take(&mut other.errors);
        self.misses += std::mem::take(&mut other.misses);
    }

    pub(super) fn clear(&mut self) {
        self.hist.reset();
        self.ops = 0;
        self.errors = 0;
        self.misses = 0;
    }

    pub(super) fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.value_at_quantile(q) as f64 / 1000.0
        }
    }

    pub(super) fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1000.0
        }
    }
}

/// What the clients and the reporter share.
pub(super) struct Shared {
    pub(super) windows: Vec<Mutex<Window>>,
    /// Distinct error texts and how often each was seen (at most 20 kept).
    pub(super) error_texts: Mutex<BTreeMap<String, u64>>,
    pub(super) stop: AtomicBool,
    pub(super) finished: AtomicUsize,
    pub(super) all_finished: Notify,
}

impl Shared {
    pub(super) fn record(&self, client: usize, micros: u64, miss: bool) {
        let mut w = lock(&self.windows[client]);
        w.hist.saturating_record(micros.max(1));
        w.ops += 1;
        if miss {
            w.misses += 1;
        }
    }

    pub(super) fn error(&self, client: usize, text: &str) {
        lock(&self.windows[client]).errors += 1;
        let mut texts = lock(&self.error_texts);
        let text: String = text.chars().take(120).collect();
        if let Some(n) = texts.get_mut(&text) {
            *n += 1;
        } else if texts.len() < 20 {
            texts.insert(text, 1);
        }
    }

    /// Moves every client's window into `into`.
    pub(super) fn drain(&self, into: &mut Window) {
        for w in &self.windows {
            into.absorb(&mut lock(w));
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

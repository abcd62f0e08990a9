//! The simulated network: who can reach whom, and when a message arrives.
//!
//! Every message gets a delivery time when it is sent: now plus a random
//! delay. Events are delivered in time order with ties broken by the RNG, so
//! wide delays reorder messages; with `reorder` off each link is FIFO, as a
//! TCP connection is. Loss and duplication are decided at send time; a
//! partition is checked both at send time and at delivery time (a message in
//! flight when the cable is cut is lost).

use crate::faults::FaultMix;
use crate::rng::SimRng;

/// Per-run network weather, drawn from the seed for the enabled faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weather {
    pub loss: f64,
    pub duplicate: f64,
    pub long_delay: f64,
    pub reorder: bool,
}

impl Weather {
    pub fn draw(rng: &mut SimRng, mix: FaultMix) -> Self {
        Weather {
            loss: if mix.loss {
                0.01 + 0.14 * rng.unit()
            } else {
                0.0
            },
            duplicate: if mix.duplicate {
                0.01 + 0.09 * rng.unit()
            } else {
                0.0
            },
            long_delay: if mix.long_delay {
                0.003 + 0.02 * rng.unit()
            } else {
                0.0
            },
            reorder: mix.reorder,
        }
    }

    pub fn calm() -> Self {
        Weather {
            loss: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            reorder: false,
        }
    }
}

/// How a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Cut by a partition at send time (the sender's transport notices).
    Unreachable,
    /// Lost silently.
    Lost,
    /// Delivery times of the copies (two for a duplicate), and whether a
    /// copy was held back for a long delay.
    Deliver(Vec<(u64, bool)>),
}

#[derive(Debug, Clone)]
pub struct Network {
    n: usize,
    /// `cut[from * n + to]`: messages from `from` to `to` are dropped.
    cut: Vec<bool>,
    /// Per-link time of the last scheduled delivery (FIFO links).
    last_delivery: Vec<u64>,
    pub weather: Weather,
}

impl Network {
    pub fn new(n: usize, weather: Weather) -> Self {
        Network {
            n,
            cut: vec![false; n * n],
            last_delivery: vec![0; n * n],
            weather,
        }
    }

    /// Node indexes are 0-based here.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut[from * self.n + to]
    }

    pub fn cut_link(&mut self, from: usize, to: usize) {
        if from != to {
            self.cut[from * self.n + to] = true;
        }
    }

    pub fn heal(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
    }

    pub fn any_cut(&self) -> bool {
        self.cut.iter().any(|&c| c)
    }

    /// Decides the fate of one message sent at `now` (µs).
    pub fn send(&mut self, rng: &mut SimRng, now: u64, from: usize, to: usize) -> Fate {
        if self.is_cut(from, to) {
            return Fate::Unreachable;
        }
        if rng.chance(self.weather.loss) {
            return Fate::Lost;
        }
        let copies = if rng.chance(self.weather.duplicate) {
            2
        } else {
            1
        };
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            if rng.chance(self.weather.long_delay) {
                // Several election timeouts (300-600 ms each) late.
                out.push((now + rng.range(1_500_000, 6_000_000), true));
                continue;
            }
            let at = if self.weather.reorder {
                now + rng.range(100, 20_000)
            } else {
                let link = from * self.n + to;
                let at = (now + rng.range(300, 2_000)).max(self.last_delivery[link]);
                self.last_delivery[link] = at;
                at
            };
            out.push((at, false));
        }
        Fate::Deliver(out)
    }
}

//! `TickClock`: turns a monotonic clock into the core's ticks, counting
//! every tick that came due, also the ones that passed while the process
//! was not running.
//!
//! The core has no clock: time is the number of [`RaftCore::tick`] calls.
//! The driver must make that number follow real time, because two
//! promises are counted in it:
//!
//! * a follower promises not to vote for a minimum election timeout after
//!   it heard from the leader (thesis §4.2.3), and
//! * a leader with lease reads trusts that promise for a lease measured
//!   from the start of a heartbeat round (thesis §6.4.1).
//!
//! A timer that *skips* the ticks it missed (tokio's `interval` with
//! `MissedTickBehavior::Delay` after a SIGSTOP, a GC or VM pause) makes a
//! leader's clock fall behind real time by the whole pause. A leader that
//! resumes, then handles the acknowledgements queued up in its socket before
//! its timer fires, would find its lease still valid and serve a read that a
//! leader elected during the pause has long made stale. So the driver asks
//! the clock before every input how many ticks came due, and runs them
//! first: the acknowledgements then arrive at a core that knows how much
//! time passed (check-quorum steps it down, the lease has run out).
//!
//! Times are microseconds of any monotonic clock: tokio's `Instant` in
//! `RaftServer` (virtual under `start_paused` tests), the simulated node's
//! clock in the simulator.
//!
//! [`RaftCore::tick`]: crate::RaftCore::tick

/// Counts the ticks due on a monotonic clock. See the module documentation.
#[derive(Debug, Clone)]
pub struct TickClock {
    period_us: u64,
    next_due_us: u64,
}

impl TickClock {
    /// A clock whose first tick is due one `period_us` after `now_us`.
    pub fn new(now_us: u64, period_us: u64) -> Self {
        Self::with_first_tick(now_us.saturating_add(period_us.max(1)), period_us)
    }

    /// A clock whose first tick is due at `first_us` (the simulator starts
    /// each node at a random phase).
    pub fn with_first_tick(first_us: u64, period_us: u64) -> Self {
        TickClock {
            period_us: period_us.max(1),
            next_due_us: first_us,
        }
    }

    /// How many ticks came due up to `now_us` since the last call; the
    /// caller runs that many [`RaftCore::tick`]s before its next input.
    ///
    /// [`RaftCore::tick`]: crate::RaftCore::tick
    pub fn due(&mut self, now_us: u64) -> u64 {
        if now_us < self.next_due_us {
            return 0;
        }
        let n = (now_us - self.next_due_us) / self.period_us + 1;
        self.next_due_us = self
            .next_due_us
            .saturating_add(n.saturating_mul(self.period_us));
        n
    }

    /// When the next tick comes due: where a driver sets its wake-up timer.
    pub fn next_due_us(&self) -> u64 {
        self.next_due_us
    }

    /// Drops the ticks due before `until_us`, as if the clock had stopped
    /// until then. Only the simulator's `clock-stop` fault uses this: a
    /// clock that loses time is outside what lease reads assume.
    pub fn lose_ticks_until(&mut self, until_us: u64) {
        if self.next_due_us < until_us {
            let lost = (until_us - self.next_due_us).div_ceil(self.period_us);
            self.next_due_us = self
                .next_due_us
                .saturating_add(lost.saturating_mul(self.period_us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TickClock;

    #[test]
    fn counts_every_tick_that_came_due_also_across_a_pause() {
        let mut c = TickClock::new(0, 10);
        assert_eq!(c.due(9), 0);
        assert_eq!(c.due(10), 1);
        assert_eq!(c.due(19), 0);
        // A pause of 5 s: all 500 ticks are due at once, none is lost.
        assert_eq!(c.due(5_019), 500);
        assert_eq!(c.next_due_us(), 5_020);
    }

    #[test]
    fn a_stopped_clock_loses_the_ticks_of_the_stop() {
        let mut c = TickClock::with_first_tick(5, 10);
        c.lose_ticks_until(100);
        assert_eq!(c.next_due_us(), 105);
        assert_eq!(c.due(104), 0);
        assert_eq!(c.due(105), 1);
    }
}

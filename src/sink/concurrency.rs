//! How many `_bulk` requests may be in flight: adaptive request concurrency
//! (the idea of Vector's ARC), an AIMD controller.
//!
//! * It starts low and grows by one whenever a request that ran while the
//!   limit was fully used came back fast (round-trip time within
//!   [`LATENCY_TOLERANCE`] of its moving average) — the cluster had room;
//! * it halves on back-pressure (a 429 or 5xx request, items refused with
//!   429, a transport failure) and shrinks by a tenth when the round trip
//!   clearly rises above its average — the cluster is saturating;
//! * one decrease per round trip: requests that started before the last
//!   decrease report their outcome without shrinking the limit again, so a
//!   burst of simultaneous 429s halves it once, not to 1.
//!
//! Never above `batch.max_in_flight`, never below 1. With
//! `elasticsearch.adaptive_concurrency = false` the limit is simply the
//! maximum. The controller ([`Controller`]) is pure; [`Limiter`] adds the
//! waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// A round trip above `average × (1 + LATENCY_TOLERANCE)` counts as rising
/// latency.
pub const LATENCY_TOLERANCE: f64 = 1.0;
/// Weight of the newest round trip in the moving average.
const EWMA_WEIGHT: f64 = 0.2;

/// What a finished request tells the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered, no back-pressure.
    Ok,
    /// 429, 5xx, items refused with 429, or no answer.
    BackPressure,
    /// Answered with an error that says nothing about load (400, 401...).
    Neutral,
}

/// The pure AIMD controller.
#[derive(Debug, Clone)]
pub struct Controller {
    limit: usize,
    max: usize,
    adaptive: bool,
    rtt_average: Option<f64>,
    /// Requests started so far; a request is identified by its start
    /// number.
    started: u64,
    /// Start number of the first request after the last decrease.
    decreased_at: u64,
}

impl Controller {
    /// A controller allowing at most `max` requests.
    pub fn new(max: usize, adaptive: bool) -> Self {
        let max = max.max(1);
        Self {
            limit: if adaptive { max.min(2) } else { max },
            max,
            adaptive,
            rtt_average: None,
            started: 0,
            decreased_at: 0,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Registers a request start; returns its start number.
    pub fn start(&mut self) -> u64 {
        self.started += 1;
        self.started
    }

    /// Registers the end of the request started as `ticket`, which took
    /// `rtt` while `in_flight` requests (itself included) ran.
    pub fn finish(&mut self, ticket: u64, rtt: Duration, in_flight: usize, signal: Signal) {
        if !self.adaptive {
            return;
        }
        let rtt = rtt.as_secs_f64();
        let may_decrease = ticket >= self.decreased_at;
        let rising = self
            .rtt_average
            .is_some_and(|avg| rtt > avg * (1.0 + LATENCY_TOLERANCE));
        match signal {
            Signal::BackPressure if may_decrease => self.decrease(0.5),
            Signal::Ok if rising && may_decrease => self.decrease(0.9),
            Signal::Ok if !rising && in_flight >= self.limit => {
                self.limit = (self.limit + 1).min(self.max);
            }
            _ => {}
        }
        if signal == Signal::Ok {
            self.rtt_average = Some(match self.rtt_average {
                Some(avg) => avg + EWMA_WEIGHT * (rtt - avg),
                None => rtt,
            });
        }
    }

    fn decrease(&mut self, factor: f64) {
        self.limit = ((self.limit as f64 * factor).floor() as usize).max(1);
        self.decreased_at = self.started + 1;
    }
}

#[derive(Debug)]
struct State {
    controller: Controller,
    in_flight: usize,
}

/// Hands out request permits under the controller's limit.
#[derive(Debug, Clone)]
pub struct Limiter {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    gauge: Gauge,
}

/// One request in flight; report its end with [`Permit::finish`] (dropping
/// it unreported frees the slot without telling the controller anything).
#[derive(Debug)]
pub struct Permit {
    limiter: Limiter,
    ticket: u64,
    done: bool,
}

impl Limiter {
    /// A limiter of at most `max` requests, reporting its limit through
    /// `gauge`.
    pub fn new(max: usize, adaptive: bool, gauge: Gauge) -> Self {
        let controller = Controller::new(max, adaptive);
        gauge.set(controller.limit() as i64);
        Self {
            state: Arc::new(Mutex::new(State {
                controller,
                in_flight: 0,
            })),
            notify: Arc::new(Notify::new()),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().controller.limit()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// A permit when one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut state = self.lock();
        if state.in_flight >= state.controller.limit() {
            return None;
        }
        state.in_flight += 1;
        let ticket = state.controller.start();
        Some(Permit {
            limiter: self.clone(),
            ticket,
            done: false,
        })
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            notified.await;
        }
    }

    fn release(&self, report: Option<(u64, Duration, Signal)>) {
        let limit = {
            let mut state = self.lock();
            let in_flight = state.in_flight;
            if let Some((ticket, rtt, signal)) = report {
                state.controller.finish(ticket, rtt, in_flight, signal);
            }
            state.in_flight = in_flight.saturating_sub(1);
            state.controller.limit()
        };
        self.gauge.set(limit as i64);
        self.notify.notify_waiters();
    }
}

impl Permit {
    /// Reports how the request went and frees its slot.
    pub fn finish(mut self, rtt: Duration, signal: Signal) {
        self.done = true;
        self.limiter.release(Some((self.ticket, rtt, signal)));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.release(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    #[test]
    fn grows_while_fast_and_fully_used_up_to_the_maximum() {
        let mut c = Controller::new(8, true);
        assert_eq!(c.limit(), 2);
        for _ in 0..20 {
            let t = c.start();
            let limit = c.limit();
            c.finish(t, FAST, limit, Signal::Ok);
        }
        assert_eq!(c.limit(), 8);
        // Not fully used: no growth signal.
        let mut c = Controller::new(8, true);
        let t = c.start();
        c.finish(t, FAST, 1, Signal::Ok);
        assert_eq!(c.limit(), 2);
    }

    #[test]
    fn halves_once_per_burst_of_back_pressure() {
        let mut c = Controller::new(8, true);
        for _ in 0..20 {
            let t = c.start();
            c.finish(t, FAST, 8, Signal::Ok);
        }
        let tickets: Vec<u64> = (0..8).map(|_| c.start()).collect();
        for t in tickets {
            c.finish(t, FAST, 8, Signal::BackPressure);
        }
        assert_eq!(c.limit(), 4, "one decrease for requests already in flight");
        let t = c.start();
        c.finish(t, FAST, 4, Signal::BackPressure);
        assert_eq!(c.limit(), 2);
        for _ in 0..5 {
            let t = c.start();
            c.finish(t, FAST, 1, Signal::BackPressure);
        }
        assert_eq!(c.limit(), 1, "never below one");
    }

    #[test]
    fn rising_latency_shrinks_and_neutral_errors_do_nothing() {
        let mut c = Controller::new(10, true);
        for _ in 0..20 {
            let t = c.start();
            c.finish(t, FAST, 10, Signal::Ok);
        }
        assert_eq!(c.limit(), 10);
        let t = c.start();
        c.finish(t, FAST * 5, 10, Signal::Ok);
        assert_eq!(c.limit(), 9);
        let t = c.start();
        c.finish(t, FAST, 9, Signal::Neutral);
        assert_eq!(c.limit(), 9);
    }

    #[test]
    fn fixed_concurrency_is_the_maximum() {
        let mut c = Controller::new(6, false);
        let t = c.start();
        c.finish(t, FAST, 6, Signal::BackPressure);
        assert_eq!(c.limit(), 6);
    }

    #[tokio::test]
    async fn permits_wait_for_a_free_slot() {
        let limiter = Limiter::new(1, false, Gauge::default());
        let first = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await.ticket }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        first.finish(FAST, Signal::Ok);
        assert_eq!(waiter.await.unwrap(), 2);
        assert_eq!(limiter.in_flight(), 0);
    }
}

//! Whether a queue is consumed, as a pure state machine over plain events: the broker ending
//! a consumer (queue deleted, node down), a subscription made or failed, and the model behind
//! a classify queue going down or coming back.
//!
//! A classify queue is not consumed while its model is not ready: its jobs wait in the broker
//! (held by nobody, spending none of their attempts) instead of failing one by one into the
//! retry queues. Only one consumer per queue may exist at a time, so a cancel is always seen
//! through (its consumer ended) before the queue is subscribed again.

/// Where one queue's consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Consuming,
    /// We cancelled it; its end has not been seen yet.
    Cancelling,
    /// Not consumed, on purpose: its model is not ready.
    Paused,
    /// A subscription is being made (after a pause that grows with failures).
    Subscribing,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The model's readiness may have changed.
    Check,
    /// The consumer ended (our cancel, or the broker's).
    Ended,
    Subscribed,
    SubscribeFailed,
}

/// What to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Cancel,
    Subscribe,
}

/// The next state and the action, given whether the queue should be consumed now (`wanted`:
/// it needs no model, or its model is ready).
pub fn step(state: State, event: Event, wanted: bool) -> (State, Action) {
    use {Action::*, Event::*, State::*};
    match (state, event) {
        (Consuming, Check) if !wanted => (Cancelling, Cancel),
        (Consuming | Cancelling, Ended) if wanted => (Subscribing, Subscribe),
        (Consuming | Cancelling, Ended) => (Paused, Nothing),
        (Paused, Check) if wanted => (Subscribing, Subscribe),
        (Subscribing, Subscribed) if wanted => (Consuming, Nothing),
        (Subscribing, Subscribed) => (Cancelling, Cancel),
        (Subscribing, SubscribeFailed) if wanted => (Subscribing, Subscribe),
        (Subscribing, SubscribeFailed) => (Paused, Nothing),
        (s, _) => (s, Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::Event::*;
    use super::State::*;
    use super::*;

    #[test]
    fn a_model_going_down_pauses_the_queue_and_coming_back_resumes_it() {
        assert_eq!(step(Consuming, Check, true), (Consuming, Nothing));
        assert_eq!(step(Consuming, Check, false), (Cancelling, Cancel));
        assert_eq!(step(Cancelling, Ended, false), (Paused, Nothing));
        assert_eq!(step(Paused, Check, false), (Paused, Nothing));
        assert_eq!(step(Paused, Check, true), (Subscribing, Subscribe));
        assert_eq!(step(Subscribing, Subscribed, true), (Consuming, Nothing));
    }

    #[test]
    fn a_cancel_is_seen_through_before_the_queue_is_subscribed_again() {
        // The model came back while our cancel was on its way: wait for the end, then subscribe.
        assert_eq!(step(Cancelling, Check, true), (Cancelling, Nothing));
        assert_eq!(step(Cancelling, Ended, true), (Subscribing, Subscribe));
        // It went down while a subscription was being made: cancel what was made.
        assert_eq!(step(Subscribing, Check, false), (Subscribing, Nothing));
        assert_eq!(step(Subscribing, Subscribed, false), (Cancelling, Cancel));
    }

    #[test]
    fn a_consumer_the_broker_ends_is_restored_unless_its_model_is_down() {
        assert_eq!(step(Consuming, Ended, true), (Subscribing, Subscribe));
        assert_eq!(step(Consuming, Ended, false), (Paused, Nothing));
        assert_eq!(step(Subscribing, SubscribeFailed, true), (Subscribing, Subscribe));
        assert_eq!(step(Subscribing, SubscribeFailed, false), (Paused, Nothing));
    }

    #[test]
    fn nothing_else_changes_anything() {
        for state in [Consuming, Cancelling, Paused, Subscribing] {
            for wanted in [true, false] {
                for event in [Check, Ended, Subscribed, SubscribeFailed] {
                    let (next, action) = step(state, event, wanted);
                    // Never two consumers: a subscription starts only from no consumer at all.
                    if action == Subscribe {
                        assert!(matches!((state, event), (Paused, Check) | (_, Ended) | (_, SubscribeFailed)));
                        assert_eq!(next, Subscribing);
                    }
                    if action == Cancel {
                        assert_eq!(next, Cancelling);
                    }
                    if next == Paused && (state != Paused || event == Check) {
                        assert!(!wanted, "paused only while its model is down");
                    }
                }
            }
        }
    }
}

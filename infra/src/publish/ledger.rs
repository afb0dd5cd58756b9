//! Which publish a confirm and a return belong to, on one pipelined confirm channel: plain
//! bookkeeping over plain data, tested without a broker.
//!
//! Confirms are exact: lapin resolves each publish's confirm by its own delivery tag (a nack
//! or an ack is never charged to another publish, as long as the tags were taken in the order
//! the frames went out, which [`super::lane`] ensures). Returns are not: lapin keeps returned
//! messages in a queue and hands the oldest to whichever confirm it completes next, and a
//! multiple-ack completes its confirms in no set order. So a return is recognised by the tag
//! Warren put in its headers, whichever confirm carried it, and a publish is judged only when
//! its own return, if it had one, can no longer be hidden:
//! - The broker sends a message's `basic.return` before its `basic.ack`, on its channel; lapin
//!   reads frames in order. So a publish's return, if any, is in lapin's queue or already handed
//!   out when its confirm completes.
//! - A confirm that carried nothing found lapin's queue empty: every return that came before it
//!   had been handed out, to confirms that completed earlier, which the caller has already shown
//!   this ledger (it collects completions until none is new, see [`super::lane`]).
//! - A confirm that carried another publish's return proves nothing about its own: its return
//!   may still wait in lapin's queue. It is undecided until its own return shows up, or until a
//!   confirm that completed later carried nothing (lapin's queue was empty then). A channel that
//!   falls quiet meanwhile is sent a probe (a publish that routes nowhere) to provide one.

use std::collections::{HashMap, HashSet};

/// A publish's number on its channel, carried in its headers (`warren-publish-tag`).
pub type Seq = u64;

/// What a confirm carried besides ack or nack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carried {
    Nothing,
    /// A returned message: the tag found in its headers (`None`: it had none) and the broker's
    /// reply ("312 NO_ROUTE").
    Return {
        owner: Option<Seq>,
        reply: String,
    },
}

/// How one publish's confirm completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack(Carried),
    Nack(Carried),
    /// The channel failed before the broker answered.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub seq: Seq,
    pub answer: Answer,
}

/// What happened to one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Acked, not returned: a queue holds it.
    Stored,
    /// Acked after a return: no queue took it.
    Returned(String),
    /// Nacked: the broker did not store it.
    Refused,
    /// The channel failed before the broker answered.
    Failed,
    /// Acked, but whether it was also returned can no longer be told (the channel failed first,
    /// or a return came back without its tag): to the caller, not stored.
    Unknown(&'static str),
}

/// The bookkeeping of one confirm channel.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Published, without a verdict yet.
    open: HashSet<Seq>,
    /// Returns seen for open publishes.
    returns: HashMap<Seq, String>,
    /// Acked publishes whose confirm carried another's return; see the module doc.
    undecided: Vec<Seq>,
    /// Returns for no open publish (a probe's, or one that broke the broker's order).
    strays: u64,
}

impl Ledger {
    /// A publish went out with tag `seq`.
    pub fn sent(&mut self, seq: Seq) {
        self.open.insert(seq);
    }

    /// Publishes acked whose verdict waits for a later confirm.
    pub fn undecided(&self) -> usize {
        self.undecided.len()
    }

    /// Returns that belonged to no open publish, so far.
    pub fn strays(&self) -> u64 {
        self.strays
    }

    /// Takes the completions collected together (every completion that happened before any of
    /// them is in this batch or an earlier one) and gives the verdicts now known.
    pub fn settle(&mut self, batch: Vec<Completion>) -> Vec<(Seq, Verdict)> {
        let mut emptied = false;
        let mut untagged = false;
        for c in &batch {
            match &c.answer {
                Answer::Ack(carried) | Answer::Nack(carried) => match carried {
                    Carried::Nothing => emptied = true,
                    Carried::Return { owner: Some(owner), reply } if self.open.contains(owner) => {
                        self.returns.insert(*owner, reply.clone());
                    }
                    Carried::Return { owner: Some(_), .. } => self.strays += 1,
                    Carried::Return { owner: None, .. } => untagged = true,
                },
                Answer::Failed => {}
            }
        }
        let mut verdicts = Vec::with_capacity(batch.len());
        // Undecided from earlier batches: a confirm of this batch completed after theirs.
        for seq in std::mem::take(&mut self.undecided) {
            if let Some(reply) = self.returns.remove(&seq) {
                verdicts.push((seq, Verdict::Returned(reply)));
            } else if untagged {
                verdicts.push((seq, Verdict::Unknown("a return came back without its publish tag")));
            } else if emptied {
                verdicts.push((seq, Verdict::Stored));
            } else {
                self.undecided.push(seq);
            }
        }
        for Completion { seq, answer } in batch {
            let verdict = match (answer, self.returns.remove(&seq)) {
                (Answer::Failed, _) => Verdict::Failed,
                (Answer::Nack(_), _) => Verdict::Refused,
                (Answer::Ack(_), Some(reply)) => Verdict::Returned(reply),
                (Answer::Ack(_), None) if untagged => Verdict::Unknown("a return came back without its publish tag"),
                (Answer::Ack(Carried::Nothing), None) => Verdict::Stored,
                (Answer::Ack(Carried::Return { .. }), None) => {
                    self.undecided.push(seq);
                    continue;
                }
            };
            verdicts.push((seq, verdict));
        }
        for (seq, _) in &verdicts {
            self.open.remove(seq);
        }
        verdicts
    }

    /// The channel is gone: the undecided can no longer be decided.
    pub fn abandon(&mut self) -> Vec<(Seq, Verdict)> {
        let verdicts = std::mem::take(&mut self.undecided)
            .into_iter()
            .map(|seq| (seq, Verdict::Unknown("the channel closed before its return could be ruled out")))
            .collect();
        self.open.clear();
        self.returns.clear();
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng, seq::SliceRandom};

    fn ack(seq: Seq) -> Completion {
        Completion { seq, answer: Answer::Ack(Carried::Nothing) }
    }

    fn ack_carrying(seq: Seq, owner: Seq) -> Completion {
        Completion { seq, answer: Answer::Ack(Carried::Return { owner: Some(owner), reply: "312 NO_ROUTE".into() }) }
    }

    fn ledger(seqs: std::ops::Range<Seq>) -> Ledger {
        let mut l = Ledger::default();
        seqs.for_each(|s| l.sent(s));
        l
    }

    fn returned() -> Verdict {
        Verdict::Returned("312 NO_ROUTE".into())
    }

    #[test]
    fn an_ack_that_carried_nothing_is_stored_and_one_carrying_its_own_return_is_returned() {
        let mut l = ledger(1..3);
        assert_eq!(l.settle(vec![ack(1), ack_carrying(2, 2)]), vec![(1, Verdict::Stored), (2, returned())]);
        assert_eq!(l.undecided(), 0);
    }

    #[test]
    fn a_return_carried_by_another_confirm_goes_to_its_own_publish() {
        // Multiple-ack of 1 and 2 where lapin handed 2's return to 1's confirm.
        let mut l = ledger(1..3);
        let v = l.settle(vec![ack_carrying(1, 2), ack(2)]);
        assert_eq!(v, vec![(2, returned())], "1 waits: its own return may still be queued in lapin");
        assert_eq!(l.undecided(), 1);
        // A later confirm that carried nothing: lapin's queue was empty, 1 had no return.
        l.sent(3);
        assert_eq!(l.settle(vec![ack(3)]), vec![(1, Verdict::Stored), (3, Verdict::Stored)]);
    }

    #[test]
    fn an_undecided_publish_is_returned_when_its_own_return_shows_up_later() {
        let mut l = ledger(1..4);
        assert_eq!(l.settle(vec![ack_carrying(1, 2)]), vec![]);
        // 2's return came with 1's confirm, 1's with 2's: both known now.
        assert_eq!(l.settle(vec![ack_carrying(2, 1)]), vec![(1, returned()), (2, returned())]);
        assert_eq!(l.undecided(), 0);
        assert_eq!(l.settle(vec![ack(3)]), vec![(3, Verdict::Stored)]);
    }

    #[test]
    fn a_witness_in_the_same_batch_decides_nothing_for_that_batch() {
        // Within one batch the order of completions is unknown: 3 may have completed before 1.
        let mut l = ledger(1..4);
        assert_eq!(l.settle(vec![ack_carrying(1, 2), ack(3)]), vec![(3, Verdict::Stored)]);
        assert_eq!(l.undecided(), 1);
        assert_eq!(l.settle(vec![ack_carrying(2, 2)]), vec![(2, returned())], "2's own: not a witness for 1");
        l.sent(4);
        assert_eq!(l.settle(vec![ack(4)]), vec![(1, Verdict::Stored), (4, Verdict::Stored)]);
    }

    #[test]
    fn a_nack_is_refused_and_a_failure_failed_whatever_they_carried() {
        let mut l = ledger(1..4);
        let nack = Completion { seq: 1, answer: Answer::Nack(Carried::Return { owner: Some(1), reply: "x".into() }) };
        let v = l.settle(vec![nack, Completion { seq: 2, answer: Answer::Failed }]);
        assert_eq!(v, vec![(1, Verdict::Refused), (2, Verdict::Failed)]);
    }

    #[test]
    fn an_untagged_return_makes_every_publish_it_could_belong_to_unknown() {
        let mut l = ledger(1..4);
        assert_eq!(l.settle(vec![ack_carrying(1, 3)]), vec![]);
        let untagged = Completion { seq: 2, answer: Answer::Ack(Carried::Return { owner: None, reply: "x".into() }) };
        let v = l.settle(vec![untagged, ack(3)]);
        assert!(v.iter().all(|(_, v)| matches!(v, Verdict::Unknown(_) | Verdict::Returned(_))), "{v:?}");
        assert_eq!(v.iter().filter(|(_, v)| matches!(v, Verdict::Unknown(_))).count(), 2);
    }

    #[test]
    fn a_return_for_no_open_publish_is_a_stray_and_abandon_leaves_nothing_decided_as_stored() {
        let mut l = ledger(1..3);
        assert_eq!(l.settle(vec![ack_carrying(1, 99)]), vec![]);
        assert_eq!(l.strays(), 1);
        let v = l.abandon();
        assert!(matches!(v.as_slice(), [(1, Verdict::Unknown(_))]), "{v:?}");
    }

    /// lapin and the broker as they behave, with everything they leave open drawn at random:
    /// returns before their acks, acks out of order and with `multiple`, lapin's queue of
    /// returns handed to confirms in the order it completes them (a multiple-ack's in any
    /// order), and the collector's batches cut anywhere. Every verdict must be the truth, and
    /// every publish must get one once probes are sent on a quiet channel.
    #[test]
    fn every_publish_gets_its_own_fate_whatever_the_order_of_acks_returns_and_batches() {
        // How often the hard cases came up: a confirm carrying another's return, and a quiet
        // channel needing a probe. A simulation that never mixes returns up proves nothing.
        let (mut foreign, mut probed) = (0, 0);
        for seed in 0..2000u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n: Seq = rng.random_range(1..40);
            let unroutable: Vec<bool> = (0..n).map(|_| rng.random_bool(0.4)).collect();
            let refused: Vec<bool> = (0..n).map(|_| rng.random_bool(0.1)).collect();
            let mut ledger = ledger(0..n);
            let mut verdicts: HashMap<Seq, Verdict> = HashMap::new();
            // The broker: per message, its return (if any) goes out at once; its ack later.
            let mut unacked: Vec<Seq> = Vec::new();
            let mut lapin_returns: std::collections::VecDeque<Seq> = Default::default();
            let mut next_probe = n;
            let mut completed: Vec<Completion> = Vec::new();
            let mut to_publish: Vec<Seq> = (0..n).collect();
            to_publish.reverse();
            let truth = |seq: Seq| -> Verdict {
                if seq >= n {
                    Verdict::Stored
                } else if refused[seq as usize] {
                    Verdict::Refused
                } else if unroutable[seq as usize] {
                    returned()
                } else {
                    Verdict::Stored
                }
            };
            let mut probes = 0;
            loop {
                let step = rng.random_range(0..4);
                if step == 0 && !to_publish.is_empty() {
                    let seq = to_publish.pop().expect("not empty");
                    if unroutable[seq as usize] {
                        lapin_returns.push_back(seq);
                    }
                    unacked.push(seq);
                } else if step == 1 && !unacked.is_empty() {
                    // One ack, or a multiple-ack of several, completed by lapin in any order.
                    unacked.shuffle(&mut rng);
                    let k = rng.random_range(1..=unacked.len().min(4));
                    let mut acked: Vec<Seq> = unacked.drain(..k).collect();
                    acked.shuffle(&mut rng);
                    for seq in acked {
                        let carried = match lapin_returns.pop_front() {
                            Some(owner) if owner != seq => {
                                foreign += 1;
                                Carried::Return { owner: Some(owner), reply: "312 NO_ROUTE".into() }
                            }
                            Some(owner) => Carried::Return { owner: Some(owner), reply: "312 NO_ROUTE".into() },
                            None => Carried::Nothing,
                        };
                        let refused = seq < n && refused[seq as usize];
                        let answer = if refused { Answer::Nack(carried) } else { Answer::Ack(carried) };
                        completed.push(Completion { seq, answer });
                    }
                } else if step == 2 && !completed.is_empty() {
                    let k = rng.random_range(1..=completed.len());
                    // Everything completed up to some point, in the order the collector polled.
                    let mut batch: Vec<Completion> = completed.drain(..k).collect();
                    batch.shuffle(&mut rng);
                    for (seq, v) in ledger.settle(batch) {
                        assert!(verdicts.insert(seq, v).is_none(), "seed {seed}: {seq} judged twice");
                    }
                } else if to_publish.is_empty() && unacked.is_empty() && completed.is_empty() {
                    if ledger.undecided() == 0 {
                        break;
                    }
                    // The lane's probe: a publish that routes nowhere, not mandatory.
                    ledger.sent(next_probe);
                    unacked.push(next_probe);
                    next_probe += 1;
                    probes += 1;
                    probed += 1;
                    assert!(probes < 100, "seed {seed}: probes never settle it");
                }
            }
            for seq in 0..n {
                assert_eq!(verdicts.get(&seq), Some(&truth(seq)), "seed {seed}: publish {seq}");
            }
        }
        println!("simulated: {foreign} confirms carried another's return, {probed} probes sent");
        assert!(foreign > 1000 && probed > 50, "foreign {foreign}, probes {probed}");
    }
}

//! How far a source's lines have been handled by every replica: what lets a file's
//! checkpoint move on without losing or repeating a line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// How far a source's lines (byte ranges of a file) have been handled by every replica:
/// where a restart may resume without losing anything. Lines are handed on in order but
/// come back in any order (a replica's backlog gives up its second batch while the first
/// is still in flight), so the resume point only moves over an unbroken run of handled
/// ranges; a line still out is a gap that holds it back. Memory is one entry per range
/// that came back early, not one per line in flight. A second run tracks what at least one
/// replica took, which bounds how far a file reads ahead of its replicas.
#[derive(Debug)]
pub struct AckTracker(Mutex<Acks>);

#[derive(Debug)]
struct Acks {
    /// Handled by every replica (delivered, or given up).
    handled: Run,
    /// Delivered to at least one replica.
    delivered: Run,
    /// The start of the first range every replica gave up: the resume point stays there,
    /// and the source reads it again (its key makes that safe) instead of skipping it.
    lost_from: Option<u64>,
}

/// An unbroken run of ranges from the start, and the ranges that came back past a gap.
#[derive(Debug)]
struct Run {
    frontier: u64,
    /// start -> end
    early: BTreeMap<u64, u64>,
}

impl Run {
    fn new(start: u64) -> Run {
        Run {
            frontier: start,
            early: BTreeMap::new(),
        }
    }

    fn add(&mut self, range: Range<u64>) {
        if range.start > self.frontier {
            let end = self.early.entry(range.start).or_insert(range.end);
            *end = (*end).max(range.end);
            return;
        }
        self.frontier = self.frontier.max(range.end);
        // Absorb every early range the run now reaches (after a rewind, batch boundaries
        // differ, so one may start below the frontier rather than exactly at it).
        while let Some((&start, &end)) = self.early.first_key_value() {
            if start > self.frontier {
                break;
            }
            self.early.pop_first();
            self.frontier = self.frontier.max(end);
        }
    }

    /// Everything from `from` on is out again: forget what came back for it, so that an
    /// earlier range coming back cannot carry the run over lines not yet re-sent.
    fn rewind(&mut self, from: u64) {
        self.frontier = self.frontier.min(from);
        drop(self.early.split_off(&from));
        if let Some((_, end)) = self.early.range_mut(..from).next_back() {
            *end = (*end).min(from);
        }
    }
}

impl AckTracker {
    pub fn new(start: u64) -> Arc<AckTracker> {
        Arc::new(AckTracker(Mutex::new(Acks {
            handled: Run::new(start),
            delivered: Run::new(start),
            lost_from: None,
        })))
    }

    /// Every replica has handled (delivered, or given up on) the lines in `range`.
    pub fn release(&self, range: Range<u64>) {
        self.0.lock().unwrap().handled.add(range);
    }

    /// Every replica's backlog gave up the lines in `range`.
    pub fn lose(&self, range: Range<u64>) {
        let mut a = self.0.lock().unwrap();
        a.lost_from = Some(a.lost_from.map_or(range.start, |l| l.min(range.start)));
        a.handled.add(range);
    }

    /// A replica took the lines in `range` (the first one to take them).
    pub fn delivered(&self, range: Range<u64>) {
        self.0.lock().unwrap().delivered.add(range);
    }

    /// How far every line has reached at least one replica.
    pub fn delivered_through(&self) -> u64 {
        self.0.lock().unwrap().delivered.frontier
    }

    /// Where a restart may resume.
    pub fn done(&self) -> u64 {
        let a = self.0.lock().unwrap();
        a.handled.frontier.min(a.lost_from.unwrap_or(u64::MAX))
    }

    /// Where to read again from, once every replica gave up some lines: the lines from
    /// there on count as out again until they come back anew.
    pub fn rewind(&self) -> Option<u64> {
        let mut a = self.0.lock().unwrap();
        let from = a.lost_from.take()?;
        a.handled.rewind(from);
        Some(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_point_waits_for_the_first_line_still_out() {
        let t = AckTracker::new(10);
        // A later batch comes back first (the first is still in flight).
        t.release(20..30);
        assert_eq!(t.done(), 10);
        t.release(10..20);
        assert_eq!(t.done(), 30);
        // Lines 30..40 never came back (never entered the queue, or still out).
        t.release(40..50);
        assert_eq!(t.done(), 30);
    }

    #[test]
    fn lines_every_replica_gave_up_are_read_again() {
        let t = AckTracker::new(0);
        t.release(0..5);
        t.delivered(0..5);
        t.lose(5..9);
        t.release(9..12);
        t.delivered(9..12);
        assert_eq!((t.done(), t.delivered_through()), (5, 5));
        assert_eq!(t.rewind(), Some(5));
        assert_eq!(t.rewind(), None);
        // Read again from 5 on, everything after it too, and taken this time.
        t.release(5..9);
        t.delivered(5..9);
        assert_eq!((t.done(), t.delivered_through()), (9, 12));
        t.release(9..12);
        t.delivered(9..12);
        assert_eq!((t.done(), t.delivered_through()), (12, 12));
    }

    #[test]
    fn lines_given_up_behind_a_range_still_out_are_not_passed_by_a_rewind() {
        // Review: the lost range was kept among the early ranges, so once the range before
        // it came back the resume point jumped over lines not yet sent again (a kill -9
        // then lost them for good).
        let t = AckTracker::new(0);
        t.lose(5..9); // 0..5 is still out
        assert_eq!(t.done(), 0);
        assert_eq!(t.rewind(), Some(5));
        t.release(0..5);
        assert_eq!(t.done(), 5, "5..9 has not been sent again yet");
        // Sent again in other pieces: the run absorbs them as they come.
        t.release(7..9);
        assert_eq!(t.done(), 5);
        t.release(5..7);
        assert_eq!(t.done(), 9);
    }
}

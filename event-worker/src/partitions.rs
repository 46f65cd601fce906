//! The partitions this worker owns, each a small state machine:
//!
//! ```text
//!   assigned ──first record──▶ loading ──queries answered──▶ live ──revoke──▶ revoking ──▶ (gone)
//!      ▲                          │ revoke (answers dropped)                        │
//!      └──────── assign again (a new generation) ◀──────────────────────────────────┘
//! ```
//!
//! - **assigned**: the group gave it to us; nothing is known of what is stored.
//! - **loading**: its first record arrived; the takeover queries run (offsets
//!   already stored past the committed one, see [`crate::replay`]; the dedup
//!   window around that record, see [`crate::dedup`]). Rebalances go on being
//!   served meanwhile, so the answers are applied only to the generation that
//!   asked: a partition revoked, or revoked and assigned again, while they ran
//!   starts over.
//! - **live**: records are handled in offset order; a stored one is skipped,
//!   an itemId repeat within the window dropped. Each partition keeps two
//!   spans of handled offsets: the one *filling* (records of the batch being
//!   built) and the one *writing* (records of the batch whose insert is in
//!   flight, see [`crate::writer`]). Cutting a batch moves filling to writing;
//!   a written batch's span is what gets committed.
//! - **revoking**: the revoke callback waits until the insert in flight is
//!   over (the [`crate::writer::InsertGate`]) before librdkafka gives the
//!   partition up; then it is forgotten at once, spans included: its rows not
//!   written are dropped, nothing of it is committed by this worker again, and
//!   its new owner starts from the last committed offset.
//!
//! Invariants, kept here (the pipeline only asks):
//! 1. A record is handled only while its partition is owned and live, and only
//!    with the takeover answers of the current generation.
//! 2. Records of a partition are handled in offset order, so its stored set is
//!    walked once and its window grows with the records.
//! 3. What is committed for a partition is the end of its writing span, once
//!    that batch is written, and only while it is owned by the generation that
//!    handled those records: a partition revoked (or revoked and assigned
//!    again) while its batch was in flight has no writing span any more, so
//!    nothing of it is committed and a failed insert of it is not retried. The
//!    commit itself is refused by the group coordinator once it is not ours.
//! 4. Before a batch is handed to the writer, ownership is confirmed by
//!    committing where each filling span starts (everything below it is
//!    committed already), see [`crate::pipeline`].
//! 5. The insert in flight is the one thing that can outlive ownership (a
//!    frozen process, an INSERT the server runs late): storage absorbs it
//!    ([`crate::replay`]), and the verdict in it is the same any owner would
//!    reach ([`crate::rows::decode`]).

use std::collections::BTreeMap;

use crate::dedup::RecentItems;
use crate::replay::{Stored, StoredOffsets};

/// Where one owned partition stands.
#[derive(Debug)]
enum Stage {
    /// Assigned; its takeover has not run (or is running).
    Assigned,
    /// Its takeover answers are in.
    Live(StoredOffsets),
}

/// Offsets `first..next` of one partition, handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: i64,
    next: i64,
}

#[derive(Debug)]
struct Owned {
    /// Bumped by every assignment: takeover answers carry the one they were
    /// asked for.
    generation: u64,
    stage: Stage,
    /// Handled into the batch being built.
    filling: Option<Span>,
    /// Handled into the batch being written, not committed yet.
    writing: Option<Span>,
}

/// A takeover in progress: which generation of which partition asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub partition: i32,
    generation: u64,
}

pub struct Partitions {
    owned: BTreeMap<i32, Owned>,
    /// Producer retries, one window per owned partition.
    recent: RecentItems,
    generations: u64,
}

impl Partitions {
    pub fn new(recent: RecentItems) -> Self {
        Self {
            owned: BTreeMap::new(),
            recent,
            generations: 0,
        }
    }

    /// The group gave us these partitions: each starts over as assigned.
    pub fn assign(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.generations += 1;
            let owned = Owned {
                generation: self.generations,
                stage: Stage::Assigned,
                filling: None,
                writing: None,
            };
            self.owned.insert(partition, owned);
            self.recent.forget(partition);
        }
    }

    /// These partitions are no longer ours: everything about them is forgotten.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.owned.remove(partition);
            self.recent.forget(*partition);
        }
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.owned.contains_key(&partition)
    }

    pub fn owned(&self) -> Vec<i32> {
        self.owned.keys().copied().collect()
    }

    pub fn count(&self) -> usize {
        self.owned.len()
    }

    /// `Some` when `partition` is owned but not live: its takeover must run,
    /// and its answers be applied with [`Partitions::go_live`].
    pub fn takeover_needed(&self, partition: i32) -> Option<Takeover> {
        match self.owned.get(&partition)? {
            Owned {
                stage: Stage::Assigned,
                generation,
                ..
            } => Some(Takeover {
                partition,
                generation: *generation,
            }),
            Owned {
                stage: Stage::Live(_),
                ..
            } => None,
        }
    }

    /// Whether itemId windows are kept at all (and must be loaded on takeover).
    pub fn dedup_window_ms(&self) -> Option<u64> {
        self.recent.enabled().then(|| self.recent.window_ms())
    }

    /// Applies a takeover's answers: `stored` offsets and the dedup `window`
    /// (`(scope, itemId, received_ms)`). `false`, and nothing applied, when
    /// the partition was revoked (or revoked and assigned again) meanwhile.
    pub fn go_live(
        &mut self,
        takeover: Takeover,
        stored: Vec<(u64, bool)>,
        window: Vec<(String, String, u64)>,
    ) -> bool {
        let Some(owned) = self.owned.get_mut(&takeover.partition) else {
            return false;
        };
        if owned.generation != takeover.generation {
            return false;
        }
        owned.stage = Stage::Live(StoredOffsets::new(stored));
        if self.recent.enabled() {
            self.recent.load(takeover.partition, window);
        }
        true
    }

    /// The record at `offset` of `partition` is handled (a row in the batch,
    /// or nothing to write): its partition's filling span reaches past it.
    pub fn handled(&mut self, partition: i32, offset: i64) {
        if let Some(owned) = self.owned.get_mut(&partition) {
            let span = owned.filling.get_or_insert(Span {
                first: offset,
                next: offset,
            });
            span.next = offset + 1;
        }
    }

    /// Per partition with records in the batch being built, the offset it
    /// starts from: committing these changes nothing for the group (all below
    /// is committed) but is refused when this member's generation is stale.
    pub fn fence_offsets(&self) -> BTreeMap<i32, i64> {
        self.owned
            .iter()
            .filter_map(|(&p, owned)| Some((p, owned.filling?.first)))
            .collect()
    }

    /// The batch being built is handed to the writer: its spans become the
    /// ones in flight. The batch before must have been settled.
    pub fn cut(&mut self) {
        for owned in self.owned.values_mut() {
            debug_assert!(
                owned.writing.is_none(),
                "a batch cut before the last one settled"
            );
            owned.writing = owned.filling.take();
        }
    }

    /// The partitions whose rows in flight may still be written: owned by the
    /// generation that handled them.
    pub fn in_flight(&self) -> std::collections::BTreeSet<i32> {
        self.owned
            .iter()
            .filter(|(_, owned)| owned.writing.is_some())
            .map(|(&p, _)| p)
            .collect()
    }

    /// The batch in flight is written: the offsets to commit (the next one to
    /// read), for the partitions still owned by the generation that handled
    /// its records.
    pub fn written(&mut self) -> BTreeMap<i32, i64> {
        self.owned
            .iter_mut()
            .filter_map(|(&p, owned)| Some((p, owned.writing.take()?.next)))
            .collect()
    }

    /// How the record at `offset` of a live partition is already stored, if it is.
    pub fn stored(&mut self, partition: i32, offset: i64) -> Option<Stored> {
        match self.owned.get_mut(&partition) {
            Some(Owned {
                stage: Stage::Live(stored),
                ..
            }) => stored.get(offset),
            _ => None,
        }
    }

    /// True when an accepted event's `(scope, item_id)` repeats one received
    /// within the window (a producer retry to drop); otherwise remembers it.
    pub fn is_repeat(
        &mut self,
        partition: i32,
        scope: &str,
        item_id: &str,
        received_ms: u64,
    ) -> bool {
        self.recent
            .is_repeat(partition, scope, item_id, received_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions() -> Partitions {
        Partitions::new(RecentItems::new(1_000, 100))
    }

    #[test]
    fn a_partition_goes_live_with_its_takeover_answers() {
        let mut owned = partitions();
        owned.assign(&[3]);
        let takeover = owned.takeover_needed(3).expect("assigned, not live");
        assert!(owned.go_live(
            takeover,
            vec![(7, true)],
            vec![("s".into(), "a".into(), 500)]
        ));
        assert_eq!(owned.takeover_needed(3), None);
        assert_eq!(owned.stored(3, 7), Some(Stored::Accepted));
        assert!(
            owned.is_repeat(3, "s", "a", 900),
            "the loaded window catches the retry"
        );
        assert!(
            !owned.is_repeat(3, "s", "", 900),
            "no itemId: never a repeat"
        );
    }

    #[test]
    fn answers_for_an_older_generation_are_dropped() {
        let mut owned = partitions();
        owned.assign(&[3]);
        let asked = owned.takeover_needed(3).expect("assigned");
        // Revoked and assigned again while the queries ran.
        owned.revoke(&[3]);
        assert!(!owned.go_live(asked, vec![(7, true)], Vec::new()));
        owned.assign(&[3]);
        assert!(!owned.go_live(asked, vec![(7, true)], Vec::new()));
        assert!(
            owned.takeover_needed(3).is_some(),
            "the new generation starts over"
        );
        assert_eq!(owned.stored(3, 7), None);
    }

    #[test]
    fn a_written_batch_commits_the_next_offset_of_each_partition_it_handled() {
        let mut owned = partitions();
        owned.assign(&[0, 1, 2]);
        for (p, o) in [(0, 5), (1, 9), (0, 6)] {
            owned.handled(p, o);
        }
        assert_eq!(
            owned.fence_offsets().into_iter().collect::<Vec<_>>(),
            vec![(0, 5), (1, 9)]
        );
        owned.cut();
        assert!(owned.fence_offsets().is_empty());
        owned.handled(2, 0); // the next batch fills meanwhile
        assert_eq!(
            owned.in_flight().into_iter().collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            owned.written().into_iter().collect::<Vec<_>>(),
            vec![(0, 7), (1, 10)]
        );
        assert!(owned.written().is_empty(), "committed once");
        owned.cut();
        assert_eq!(
            owned.written().into_iter().collect::<Vec<_>>(),
            vec![(2, 1)]
        );
    }

    #[test]
    fn a_partition_revoked_while_its_batch_was_written_is_not_committed() {
        let mut owned = partitions();
        owned.assign(&[0, 1]);
        owned.handled(0, 5);
        owned.handled(1, 3);
        owned.cut();
        // Revoked and assigned again while the insert ran: a new generation.
        owned.revoke(&[0]);
        owned.assign(&[0]);
        owned.handled(0, 5);
        assert_eq!(owned.in_flight().into_iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            owned.written().into_iter().collect::<Vec<_>>(),
            vec![(1, 4)]
        );
        assert_eq!(
            owned.fence_offsets().into_iter().collect::<Vec<_>>(),
            vec![(0, 5)],
            "the new generation starts from what it handles itself"
        );
    }

    #[test]
    fn a_revoked_partition_is_forgotten() {
        let mut owned = partitions();
        owned.assign(&[1, 2]);
        let takeover = owned.takeover_needed(1).expect("assigned");
        assert!(owned.go_live(takeover, Vec::new(), vec![("s".into(), "a".into(), 500)]));
        owned.revoke(&[1]);
        assert!(!owned.owns(1) && owned.owns(2));
        assert_eq!(owned.owned(), vec![2]);
        owned.assign(&[1]);
        let takeover = owned.takeover_needed(1).expect("assigned again");
        assert!(owned.go_live(takeover, Vec::new(), Vec::new()));
        assert!(
            !owned.is_repeat(1, "s", "a", 600),
            "the old window went with the revoke"
        );
    }
}

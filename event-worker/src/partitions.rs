//! The partitions this worker owns, each a small state machine:
//!
//! ```text
//!   assigned ──first record──▶ loading ──queries answered──▶ live ──revoke──▶ (gone)
//!      ▲                          │ revoke (answers dropped)          │
//!      └──────── assign again (a new generation) ◀────────────────────┘
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
//!   an itemId repeat within the window dropped.
//! - **revoked**: forgotten at once, with everything the pipeline holds of it
//!   (rows not written, held records, see [`crate::pipeline`]); nothing of it
//!   is committed by this worker again. Its new owner starts from the last
//!   committed offset.
//!
//! Invariants the pipeline relies on, kept here:
//! 1. A record is handled only while its partition is owned and live, and only
//!    with the takeover answers of the current generation.
//! 2. Records of a partition are handled in offset order, so its stored set is
//!    walked once and its window grows with the records.
//! 3. What is committed for a partition (the batch's offsets, see
//!    [`crate::batch`]) only ever follows records handled while it was owned;
//!    the commit itself is refused by the group coordinator once it is not.
//! 4. The insert in flight is the one thing that can outlive ownership (a
//!    frozen process, an INSERT the server runs late): storage absorbs it
//!    ([`crate::replay`]).

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

#[derive(Debug)]
struct Owned {
    /// Bumped by every assignment: takeover answers carry the one they were
    /// asked for.
    generation: u64,
    stage: Stage,
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

//! The pipeline's side of the consumer group: receiving records, pausing and
//! resuming partitions, committing offsets, all on the raw topic. What to
//! commit and when is decided elsewhere (see [`crate::partitions`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::WorkerContext;

/// How often `recv()` is restarted when nothing arrives.
const POLL_TICK: Duration = Duration::from_millis(100);

pub struct GroupConsumer {
    consumer: StreamConsumer<WorkerContext>,
    topic: String,
}

impl GroupConsumer {
    pub fn new(consumer: StreamConsumer<WorkerContext>, topic: String) -> Self {
        Self { consumer, topic }
    }

    /// `recv()`, given up after [`POLL_TICK`]. The StreamConsumer is only
    /// woken when its queue goes from empty to non-empty; an event that lands
    /// on a non-empty queue (a rebalance behind a statistics event, say) can
    /// then sit unserved until the next message arrives, which may be never:
    /// the partition assignment would not be applied. Polling again on every
    /// tick serves it.
    pub async fn recv_or_tick(&self) -> Option<KafkaResult<OwnedMessage>> {
        match tokio::time::timeout(POLL_TICK, self.consumer.recv()).await {
            Ok(received) => Some(received.map(|message| message.detach())),
            Err(_) => None,
        }
    }

    pub fn pause(&self, partitions: &[i32]) {
        let list = self.list(partitions.iter().map(|&p| (p, Offset::Invalid)));
        if let Err(error) = self.consumer.pause(&list) {
            tracing::warn!(%error, "cannot pause partitions");
        }
    }

    pub fn resume(&self, partitions: &[i32]) {
        let list = self.list(partitions.iter().map(|&p| (p, Offset::Invalid)));
        if let Err(error) = self.consumer.resume(&list) {
            tracing::warn!(%error, "cannot resume partitions");
        }
    }

    /// Synchronously commits `offsets` (the next offset to read, per
    /// partition); nothing to commit is a success. The group coordinator
    /// refuses the commit when this member's generation is stale.
    pub fn commit_sync(&self, offsets: &BTreeMap<i32, i64>) -> KafkaResult<()> {
        let list = self.list(offsets.iter().map(|(&p, &o)| (p, Offset::Offset(o))));
        if list.count() == 0 {
            return Ok(());
        }
        tokio::task::block_in_place(|| self.consumer.commit(&list, CommitMode::Sync))
    }

    /// librdkafka's fatal error, once the consumer has one: it is unusable
    /// from then on. A static member frozen past its session timeout can get
    /// one (`FencedInstanceId`) when it wakes and commits under its old
    /// member id while it is rejoining under a new one.
    pub fn fatal_error(&self) -> Option<String> {
        self.consumer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }

    fn list(&self, partitions: impl Iterator<Item = (i32, Offset)>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in partitions {
            if let Err(error) = list.add_partition_offset(&self.topic, partition, offset) {
                tracing::warn!(%error, partition, "cannot build partition list");
            }
        }
        list
    }
}

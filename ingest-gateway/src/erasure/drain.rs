//! Step 3 of an erasure: wait until the workers have processed everything the
//! raw topic held at a given moment. The raw topic's end offsets are read
//! once; then the workers' group's committed offsets are polled until each
//! partition's is at or past its end (a worker commits an offset only after
//! every record below it is stored or dropped). Committed offsets are asked
//! by a short-lived consumer that never joins the group (INFRA-NOTES: asking
//! a subscribed consumer can hang its drop).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Per partition, an offset: the end (next to be written) or the committed one
/// (next to be read).
pub type Offsets = BTreeMap<i32, i64>;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(500);

pub struct Drain {
    brokers: String,
    topic: String,
    group: String,
}

impl Drain {
    pub fn new(brokers: &str, topic: &str, group: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
        }
    }

    fn consumer(&self, group: &str) -> Result<BaseConsumer, String> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("kafka client: {e}"))
    }

    /// The raw topic's end offset of every partition, now.
    pub async fn end_offsets(&self) -> Result<Offsets, String> {
        let consumer = self.consumer("powehi-erasure-reader")?;
        let topic = self.topic.clone();
        blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
                .map_err(|e| format!("raw topic metadata: {e}"))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(format!("raw topic {topic:?} has no partitions"));
            }
            let mut ends = Offsets::new();
            for partition in partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
                    .map_err(|e| format!("raw topic end of partition {partition}: {e}"))?;
                ends.insert(partition, high);
            }
            Ok(ends)
        })
        .await
    }

    /// The group's committed offsets of `partitions` (absent: none committed).
    async fn committed(&self, partitions: Vec<i32>) -> Result<Offsets, String> {
        let consumer = self.consumer(&self.group)?;
        let topic = self.topic.clone();
        blocking(move || {
            let mut list = TopicPartitionList::new();
            for partition in partitions {
                list.add_partition(&topic, partition);
            }
            let committed = consumer
                .committed_offsets(list, KAFKA_TIMEOUT)
                .map_err(|e| format!("committed offsets: {e}"))?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some((e.partition(), offset)),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    /// Waits until the group has committed every partition up to `ends`,
    /// calling `heartbeat` now and then; an error after `timeout`, naming the
    /// partitions still behind.
    pub async fn wait_passed(
        &self,
        ends: &Offsets,
        timeout: Duration,
        run: &super::Run<'_>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut last_beat = Instant::now();
        loop {
            let behind = match self.committed(ends.keys().copied().collect()).await {
                Ok(committed) => behind(ends, &committed),
                Err(error) => {
                    tracing::warn!(%error, "erasure: cannot read the workers' committed offsets");
                    ends.keys().copied().collect()
                }
            };
            if behind.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "the workers (group {:?}) did not pass the raw topic's end within {timeout:?} \
                     (partitions behind: {behind:?}); is a worker running?",
                    self.group
                ));
            }
            if last_beat.elapsed() >= super::HEARTBEAT {
                run.beat().await;
                last_beat = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Partitions whose committed offset is below their end. A partition that
/// never held a record (end 0) is never behind.
fn behind(ends: &Offsets, committed: &Offsets) -> Vec<i32> {
    ends.iter()
        .filter(|(partition, &end)| end > 0 && committed.get(partition).is_none_or(|&c| c < end))
        .map(|(&partition, _)| partition)
        .collect()
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| format!("kafka call: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_behind_until_its_commit_reaches_the_end() {
        let ends: Offsets = [(0, 5), (1, 0), (2, 3)].into_iter().collect();
        let committed: Offsets = [(0, 5), (2, 2)].into_iter().collect();
        assert_eq!(behind(&ends, &committed), vec![2]);
        let committed: Offsets = [(0, 6), (2, 3)].into_iter().collect();
        assert!(behind(&ends, &committed).is_empty());
        assert_eq!(
            behind(&ends, &Offsets::new()),
            vec![0, 2],
            "nothing committed"
        );
    }
}

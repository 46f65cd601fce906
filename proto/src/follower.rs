//! Replaying and following the config log (`powehi.config`); feature `kafka`.
//!
//! The one piece of I/O in this crate, kept here because every process needs
//! exactly the same behaviour: replay the compacted topic from the beginning,
//! publish nothing until caught up (a half-replayed config would refuse valid
//! keys or reject valid events), then apply each new record as it arrives.
//! Writers wait on [`ConfigFollower::wait_applied`] for read-your-writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::ConfigSnapshot;

/// Per partition, the next offset to apply (everything below is applied).
type Applied = BTreeMap<i32, i64>;

pub struct ConfigFollower {
    topic: String,
    client_config: ClientConfig,
    snapshot: RwLock<Arc<ConfigSnapshot>>,
    applied: watch::Sender<Applied>,
    caught_up: AtomicBool,
    /// Reads the log's end for [`ConfigFollower::catch_up`]; made on first use.
    end_reader: OnceLock<Arc<BaseConsumer>>,
    /// The last end read: when the read started, and the end.
    last_end: tokio::sync::Mutex<Option<(Instant, i64)>>,
}

impl ConfigFollower {
    pub fn new(brokers: &str, topic: &str) -> Self {
        let mut client_config = ClientConfig::new();
        client_config.set("bootstrap.servers", brokers);
        Self {
            topic: topic.to_string(),
            client_config,
            snapshot: RwLock::new(Arc::new(ConfigSnapshot::default())),
            applied: watch::channel(Applied::new()).0,
            caught_up: AtomicBool::new(false),
            end_reader: OnceLock::new(),
            last_end: tokio::sync::Mutex::new(None),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The configuration as of now; cheap (a shared pointer).
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Waits until the record at `offset` of `partition` is applied.
    pub async fn wait_applied(&self, partition: i32, offset: i64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let seen = tokio::time::timeout(timeout, async {
            applied
                .wait_for(|a| a.get(&partition).is_some_and(|&next| next > offset))
                .await
                .is_ok()
        });
        matches!(seen.await, Ok(true))
    }

    /// Waits until every record written to the log before this call is
    /// applied, and answers the snapshot's position then; `None` when that
    /// cannot be known or reached within `timeout`. A gateway asks this when
    /// an event names a type it does not know, in case another gateway has
    /// just registered it (see `ingest-gateway`'s ingest).
    ///
    /// Callers that arrive while the log's end is being read wait for that
    /// read and, if it started before they arrived, for one more: so a burst
    /// costs the broker about one request per round trip, not one per caller.
    pub async fn catch_up(&self, timeout: Duration) -> Option<i64> {
        let asked = Instant::now();
        let end = {
            let mut last = tokio::time::timeout(timeout, self.last_end.lock())
                .await
                .ok()?;
            match *last {
                Some((started, end)) if started >= asked => end,
                _ => {
                    let started = Instant::now();
                    let end = self.read_end(timeout).await?;
                    *last = Some((started, end));
                    end
                }
            }
        };
        let left = timeout.saturating_sub(asked.elapsed());
        if end > 0 && !self.wait_applied(0, end - 1, left).await {
            return None;
        }
        Some(self.snapshot().position)
    }

    /// The log's end offset (of its one partition), read from the broker.
    async fn read_end(&self, timeout: Duration) -> Option<i64> {
        let reader = match self.end_reader.get() {
            Some(reader) => reader.clone(),
            None => {
                let reader: BaseConsumer = self
                    .client_config
                    .clone()
                    .set("group.id", "powehi-config-reader")
                    .create()
                    .ok()?;
                self.end_reader.get_or_init(|| Arc::new(reader)).clone()
            }
        };
        let topic = self.topic.clone();
        let read = tokio::task::spawn_blocking(move || reader.fetch_watermarks(&topic, 0, timeout));
        match read.await {
            Ok(Ok((_, high))) => Some(high),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the config log's end");
                None
            }
            Err(_) => None,
        }
    }

    /// Creates the compacted topic if missing (one partition: one total order).
    pub async fn ensure_topic(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config.create()?;
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }

    /// Replays the log from the beginning, then follows it, calling `on_change`
    /// with every snapshot from catch-up on and `on_record` with the outcome of
    /// every record. Runs until the process ends; restarts itself on errors.
    pub async fn follow(
        self: Arc<Self>,
        on_change: impl Fn(&ConfigSnapshot),
        on_record: impl Fn(Result<(), String>),
    ) {
        loop {
            if let Err(error) = self.follow_once(&on_change, &on_record).await {
                tracing::warn!(%error, "config log follower failed, restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn follow_once(
        &self,
        on_change: &impl Fn(&ConfigSnapshot),
        on_record: &impl Fn(Result<(), String>),
    ) -> Result<(), KafkaError> {
        self.ensure_topic().await?;
        let consumer: Arc<StreamConsumer> = Arc::new(
            self.client_config
                .clone()
                // Required by librdkafka, never used: offsets are assigned, not committed.
                .set("group.id", "powehi-config-reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .create()?,
        );
        let partitions = self.partitions(&consumer).await?;
        let mut list = TopicPartitionList::new();
        for &partition in &partitions {
            list.add_partition_offset(&self.topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        // A fresh replay starts from scratch: a record deleted meanwhile is gone.
        let mut snapshot = ConfigSnapshot::default();
        let mut high_watermarks = self.high_watermarks(&consumer, &partitions).await?;
        let mut next: Applied = partitions.iter().map(|&p| (p, 0)).collect();
        self.publish(&snapshot, &next, &high_watermarks, on_change);
        loop {
            let received = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await;
            let Ok(received) = received else {
                // Quiet log: a compacted tail may end before the high watermark.
                if !self.is_caught_up() {
                    high_watermarks =
                        self.positions_as_caught_up(&consumer, &partitions, high_watermarks);
                    self.publish(&snapshot, &next, &high_watermarks, on_change);
                }
                continue;
            };
            let message = received?;
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let outcome = snapshot.apply_at(message.offset(), &key, message.payload());
            if let Err(problem) = &outcome {
                tracing::warn!(problem, "config record ignored");
            }
            on_record(outcome);
            next.insert(message.partition(), message.offset() + 1);
            self.publish(&snapshot, &next, &high_watermarks, on_change);
        }
    }

    /// Makes the snapshot visible once the replay has caught up (not before:
    /// a half-replayed config would refuse valid keys), and records progress.
    fn publish(
        &self,
        snapshot: &ConfigSnapshot,
        next: &Applied,
        high_watermarks: &Applied,
        on_change: &impl Fn(&ConfigSnapshot),
    ) {
        let caught_up = high_watermarks
            .iter()
            .all(|(p, high)| next.get(p).is_some_and(|n| n >= high));
        if caught_up {
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot.clone());
            on_change(snapshot);
            if !self.caught_up.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    data_sources = snapshot.data_sources.len(),
                    schemas = snapshot.schemas.len(),
                    "config log replayed"
                );
            }
        }
        self.applied.send_replace(next.clone());
    }

    /// When nothing arrives, the consumer's position is the truth: lower the
    /// expected marks to it where it already stands at or past them.
    fn positions_as_caught_up(
        &self,
        consumer: &StreamConsumer,
        partitions: &[i32],
        marks: Applied,
    ) -> Applied {
        let Ok(positions) = consumer.position() else {
            return marks;
        };
        let mut marks = marks;
        for &partition in partitions {
            if let Some(Offset::Offset(position)) = positions
                .find_partition(&self.topic, partition)
                .map(|e| e.offset())
            {
                marks
                    .entry(partition)
                    .and_modify(|high| *high = (*high).min(position));
            }
        }
        marks
    }

    async fn partitions(&self, consumer: &Arc<StreamConsumer>) -> Result<Vec<i32>, KafkaError> {
        let (consumer, topic) = (consumer.clone(), self.topic.clone());
        let metadata = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        Ok(partitions)
    }

    async fn high_watermarks(
        &self,
        consumer: &Arc<StreamConsumer>,
        partitions: &[i32],
    ) -> Result<Applied, KafkaError> {
        let (consumer, topic, partitions) =
            (consumer.clone(), self.topic.clone(), partitions.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut marks = Applied::new();
            for partition in partitions {
                let (_, high) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))?;
                marks.insert(partition, high);
            }
            Ok(marks)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

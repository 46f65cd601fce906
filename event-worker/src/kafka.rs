//! The Kafka consumer: settings, rebalance notifications and lag statistics.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::writer::InsertGate;

/// What a rebalance changed, for the pipeline to apply between two records.
#[derive(Debug)]
pub enum RebalanceEvent {
    Revoked(Vec<i32>),
    Assigned(Vec<i32>),
}

/// Callbacks run inside `recv()` on the pipeline's own task; they only report,
/// the pipeline acts (see [`crate::pipeline`]).
pub struct WorkerContext {
    rebalances: Mutex<mpsc::Sender<RebalanceEvent>>,
    /// The insert in flight, which a revoke waits for (see [`crate::writer`]).
    insert_gate: Arc<InsertGate>,
    metrics: Arc<Metrics>,
    topic: String,
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // -1 is librdkafka's internal "unassigned" partition.
            if *partition >= 0 && stats.consumer_lag >= 0 {
                let label = partition.to_string();
                self.metrics
                    .consumer_lag
                    .with_label_values(&[label.as_str()])
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            if self.insert_gate.is_busy() {
                let started = std::time::Instant::now();
                if self.insert_gate.wait_idle() {
                    tracing::info!(waited = ?started.elapsed(), "revoke waited for the insert in flight");
                } else {
                    tracing::warn!("insert still in flight after the revoke wait; giving the partitions up anyway");
                }
            }
            self.report(RebalanceEvent::Revoked(partitions(list)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.report(RebalanceEvent::Assigned(partitions(list))),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl WorkerContext {
    fn report(&self, event: RebalanceEvent) {
        let sender = self.rebalances.lock().unwrap_or_else(|p| p.into_inner());
        let _ = sender.send(event);
    }
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

pub fn consumer(
    config: &Config,
    metrics: Arc<Metrics>,
    insert_gate: Arc<InsertGate>,
) -> KafkaResult<(
    StreamConsumer<WorkerContext>,
    mpsc::Receiver<RebalanceEvent>,
)> {
    let (sender, receiver) = mpsc::channel();
    let context = WorkerContext {
        rebalances: Mutex::new(sender),
        insert_gate,
        metrics,
        topic: config.kafka.raw_topic.clone(),
    };
    let consumer: StreamConsumer<WorkerContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.consumer_group)
        .set("client.id", "powehi-event-worker")
        // Static membership: a worker restarted under the same name (after a
        // kill -9, a deploy) takes its partitions back at once, instead of
        // waiting for the group to expire its old session first. A graceful
        // stop still hands them over at once: the pipeline unsubscribes, and
        // librdkafka leaves the group on unsubscribe even for a static member
        // (it skips the leave only when the consumer is destroyed).
        .set("group.instance.id", config.worker_name())
        // Offsets move only when the pipeline commits after a successful insert.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            config.kafka_session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.kafka_session_timeout_ms / 4).max(100).to_string(),
        )
        // Bounded prefetch: at most this much waits in memory. When it is full
        // librdkafka postpones the next fetch by fetch.queue.backoff.ms, 1 s by
        // default, which starved the pipeline (40k records/s instead of 200k+).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10")
        // Fetch in chunks: the broker holds a fetch until 256 KiB are there
        // or 100 ms have passed. With the default (answer as soon as one byte
        // is there) a moderate stream of single events became one fetch per
        // produce request: at 8k events/s the worker spent 3x the CPU and the
        // broker a fifth more, for the ~100 ms of freshness this gives back.
        .set("fetch.min.bytes", "262144")
        .set("fetch.wait.max.ms", "100")
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    Ok((consumer, receiver))
}

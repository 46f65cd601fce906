//! `kafka`: raw librdkafka production of the records the gateway writes — the
//! Kafka ceiling, and the way to preload a topic for the worker benchmark.
//! `topics`: create / delete the benchmark's topics.
//!
//! The producer is configured like the gateway's (acks=all, idempotence, same
//! compression, linger and queue bounds); records are the gateway's envelopes of the
//! generated events, each with a fresh event id, keyed by scope + session.
//! Deliveries are awaited with a bounded window of records in flight.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;
use serde_json::value::RawValue;

use crate::events::{kafka_record, EventGen};
use crate::stats::{emit, per_second, round3};

/// A raw-topic producer configured like the gateway's, and where its topic lives.
/// Shared by the raw-librdkafka baseline and `baseline-http --kafka-topic`.
#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    #[arg(long, env = "POWEHI_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Partitions if the topic has to be created (the gateway's default).
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Producer batching delay (the gateway's default).
    #[arg(long, default_value_t = 2)]
    pub linger_ms: u64,
    /// Compression of record batches (the gateway's default).
    #[arg(
        long,
        default_value = proto::producer::DEFAULT_COMPRESSION,
        value_parser = proto::producer::COMPRESSIONS
    )]
    pub compression: String,
}

impl ProducerArgs {
    /// Creates `topic` if it is missing, then a producer with the gateway's own
    /// settings, so what it measures compares like for like.
    pub async fn producer_for(
        &self,
        topic: &str,
        client_id: &str,
    ) -> anyhow::Result<FutureProducer> {
        ensure_topic(&self.brokers, topic, self.partitions).await?;
        Ok(
            proto::producer::raw_producer_config(&self.brokers, self.linger_ms, &self.compression)
                .set("client.id", client_id)
                .create()?,
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[arg(long)]
    pub topic: String,
    /// Data source the events belong to (their scope).
    #[arg(long, default_value = "bench")]
    pub client_id: String,
    /// Produce exactly this many records (to fill a topic for the worker benchmark).
    #[arg(long, conflicts_with = "duration")]
    pub preload: Option<u64>,
    /// Produce at max throughput for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Records awaiting their acknowledgement at most.
    #[arg(long, default_value_t = 100_000)]
    pub window: usize,
    /// Distinct events generated in advance.
    #[arg(long, default_value_t = 10_000)]
    pub pool: usize,
    #[arg(long, default_value_t = 10_000)]
    pub sessions: u64,
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TopicsArgs {
    #[arg(long, env = "POWEHI_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topics to delete (missing ones are fine).
    #[arg(long, value_delimiter = ',')]
    pub delete: Vec<String>,
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code:?}"),
        }
    }
    Ok(())
}

pub async fn delete_topics(args: TopicsArgs) -> anyhow::Result<()> {
    if args.delete.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(&args.brokers).create()?;
    let names: Vec<&str> = args.delete.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&names, &options).await? {
        match result {
            Ok(name) => eprintln!("deleted topic {name}"),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                eprintln!("topic {name} did not exist")
            }
            Err((name, code)) => eprintln!("cannot delete topic {name}: {code:?}"),
        }
    }
    Ok(())
}

pub async fn run(args: KafkaArgs) -> anyhow::Result<()> {
    let producer = args
        .producer
        .producer_for(&args.topic, "powehi-loadgen")
        .await?;

    // Events parsed once; each record gets its own envelope (fresh id, now).
    let mut gen = EventGen::new(&args.client_id, args.sessions, args.seed);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut events: Vec<(String, Box<RawValue>)> = Vec::with_capacity(args.pool);
    for _ in 0..args.pool.max(1) {
        let text = gen.event(now_ms, None).to_string();
        let (key, _) = kafka_record(&args.client_id, &text, now_ms)?;
        events.push((key, serde_json::from_str(&text)?));
    }

    let limit = args.preload.unwrap_or(u64::MAX);
    let deadline = match args.preload {
        Some(_) => None,
        None => Some(Instant::now() + Duration::from_secs_f64(args.duration)),
    };
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(args.window.min(1 << 20));
    let (mut sent, mut acked, mut failed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut settle = |outcome: Result<Result<_, _>, _>| match outcome {
        Ok(Ok(_)) => acked += 1,
        _ => failed += 1,
    };
    while sent < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let (key, event) = &events[(sent % events.len() as u64) as usize];
        let id = uuid::Uuid::now_v7().to_string();
        let received_at_ms = chrono::Utc::now().timestamp_millis();
        let payload =
            proto::Envelope::new(id.into(), &args.client_id, received_at_ms, event).to_bytes();
        bytes += payload.len() as u64;
        let mut record = FutureRecord::to(&args.topic).key(key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match in_flight.pop_front() {
                        Some(oldest) => settle(oldest.await),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((error, _)) => anyhow::bail!("cannot produce: {error}"),
            }
        }
        sent += 1;
        if in_flight.len() >= args.window {
            if let Some(oldest) = in_flight.pop_front() {
                settle(oldest.await);
            }
        }
    }
    while let Some(delivery) = in_flight.pop_front() {
        settle(delivery.await);
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(10))?;

    let summary = json!({
        "mode": "kafka",
        "topic": args.topic,
        "preload": args.preload,
        "records": sent,
        "acked": acked,
        "failed": failed,
        "mean_record_bytes": bytes.checked_div(sent).unwrap_or(0),
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "events_per_s": per_second(acked, elapsed),
        "mb_per_s": round3(bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)),
        "compression": args.producer.compression,
        "linger_ms": args.producer.linger_ms,
    });
    let human = format!(
        "kafka {}: {acked} records acknowledged ({failed} failed) in {:.2} s: {:.0} events/s",
        args.topic,
        elapsed.as_secs_f64(),
        per_second(acked, elapsed)
    );
    emit(&summary, &human);
    if failed > 0 {
        anyhow::bail!("{failed} records were not acknowledged");
    }
    Ok(())
}

//! The Kafka side of the gateway: one record per event on the raw topic.
//!
//! Guarantee: [`KafkaSink::send_all`] returns `Ok` only after Kafka acknowledged
//! every record (acks=all on an idempotent producer, so a broker-side retry can
//! neither reorder nor duplicate). If any record fails, the call fails and the
//! request is answered 503: records that did get through before the failure are
//! stored, but the producer was told nothing was acknowledged and will retry, so
//! at-least-once holds (a retry with the same `itemId` keeps the same event id).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode as Code;

use crate::config::Config;
use crate::metrics::Metrics;

/// A record ready for Kafka.
pub struct OutRecord {
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Delivery(String),
}

pub struct KafkaSink {
    /// Replaced as a whole when librdkafka reports a fatal (idempotence) error.
    producer: RwLock<Arc<FutureProducer>>,
    client_config: ClientConfig,
    topic: String,
    metrics: Arc<Metrics>,
}

impl KafkaSink {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let mut client_config = proto::producer::raw_producer_config(
            &config.kafka.brokers,
            config.kafka_linger_ms,
            &config.kafka_compression,
        );
        client_config.set("client.id", "powehi-ingest-gateway").set(
            "message.timeout.ms",
            config.kafka_delivery_timeout_ms.to_string(),
        );
        let producer = client_config.create()?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            client_config,
            topic: config.kafka.raw_topic.clone(),
            metrics,
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues every record, then waits for every acknowledgement.
    pub async fn send_all(&self, records: &[OutRecord]) -> Result<(), SinkError> {
        let started = Instant::now();
        let producer = self.producer();
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let mut pending = FutureRecord::to(&self.topic)
                .key(&record.key)
                .payload(&record.payload);
            loop {
                match producer.send_result(pending) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // The producer's buffer is full: wait for it to drain a little.
                        pending = returned;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((error, _)) => return Err(self.failed(&producer, error.to_string())),
                }
            }
        }
        let mut first_error = None;
        for outcome in join_all(deliveries).await {
            let error = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => error.to_string(),
                Err(_canceled) => "the producer was shut down".to_string(),
            };
            first_error.get_or_insert(error);
        }
        if let Some(error) = first_error {
            return Err(self.failed(&producer, error));
        }
        self.metrics
            .kafka_delivery_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn failed(&self, producer: &Arc<FutureProducer>, error: String) -> SinkError {
        self.metrics.kafka_delivery_errors.inc();
        tracing::warn!(%error, "kafka did not acknowledge a request");
        if let Some(fatal) = producer.client().fatal_error() {
            self.replace_producer(producer, &format!("{fatal:?}"));
        }
        SinkError::Delivery(error)
    }

    /// An idempotent producer that hit a fatal error refuses everything from then
    /// on; a fresh one (new producer id) takes over. Only the first caller that
    /// sees the broken producer replaces it.
    fn replace_producer(&self, broken: &Arc<FutureProducer>, reason: &str) {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, broken) {
            return;
        }
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::error!(reason, "kafka producer hit a fatal error, replaced it");
                self.metrics.kafka_producer_restarts.inc();
                *current = Arc::new(fresh);
            }
            Err(error) => tracing::error!(%error, "cannot create a new kafka producer"),
        }
    }

    /// Creates the raw topic if it does not exist; `Ok` when it exists afterwards.
    pub async fn ensure_topic(&self, partitions: i32) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config.create()?;
        // Replication -1: the broker's default.replication.factor decides.
        let topic = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(topic = name, ?code, "cannot create topic");
                    })
                }
            }
        }
        Ok(())
    }

    /// Whether the broker answers and knows the raw topic (blocking: call off the executor).
    pub fn probe(&self) -> bool {
        let producer = self.producer();
        match producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
        {
            Ok(metadata) => metadata.topics().iter().any(|t| {
                t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()
            }),
            Err(_) => false,
        }
    }

    /// Waits up to `timeout` for queued records on shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer().flush(timeout) {
            tracing::warn!(%error, "kafka producer flush did not complete");
        }
    }
}

//! The gateway's writes to the config log (`powehi.config`).
//!
//! Reading is [`proto::follower::ConfigFollower`]'s job (shared with the
//! workers). A write answers only once this gateway has applied it
//! (read-your-writes): the admin API never answers 201 for something a
//! follow-up GET on the same gateway would not show.

use std::sync::Arc;
use std::time::Duration;

use proto::config::{ConfigRecord, ConfigSnapshot};
use proto::follower::ConfigFollower;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long a write waits to see itself applied before failing.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigLogError {
    #[error("kafka did not take the config record: {0}")]
    Kafka(String),
    #[error("the config record was written but not seen within {0:?}")]
    NotApplied(Duration),
}

pub struct ConfigLog {
    pub follower: Arc<ConfigFollower>,
    producer: FutureProducer,
}

impl ConfigLog {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(Self {
            follower: Arc::new(ConfigFollower::new(brokers, topic)),
            producer,
        })
    }

    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.follower.snapshot()
    }

    pub fn is_caught_up(&self) -> bool {
        self.follower.is_caught_up()
    }

    /// Writes a record (`None`: tombstone) and waits until this gateway applied it.
    pub async fn write(
        &self,
        key: &str,
        record: Option<&ConfigRecord>,
    ) -> Result<(), ConfigLogError> {
        let payload = record.map(|r| serde_json::to_vec(r).unwrap_or_default());
        let mut out = FutureRecord::<str, Vec<u8>>::to(self.follower.topic()).key(key);
        if let Some(payload) = &payload {
            out = out.payload(payload);
        }
        let delivery = self
            .producer
            .send(out, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| ConfigLogError::Kafka(error.to_string()))?;
        if self
            .follower
            .wait_applied(delivery.partition, delivery.offset, APPLY_TIMEOUT)
            .await
        {
            Ok(())
        } else {
            Err(ConfigLogError::NotApplied(APPLY_TIMEOUT))
        }
    }
}

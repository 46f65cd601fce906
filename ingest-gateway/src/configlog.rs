//! The gateway's writes to the config log (`powehi.config`).
//!
//! Reading is [`proto::follower::ConfigFollower`]'s job (shared with the
//! workers). A write answers only once this gateway has applied it
//! (read-your-writes): the admin API never answers 201 for something a
//! follow-up GET on the same gateway would not show.
//!
//! No lost updates: every change is planned from a snapshot and written as a
//! [`ConditionalWrite`] that applies only if the key was not set since that
//! snapshot (the fold and why it survives compaction are in
//! [`proto::config`]). A write that lost its race is planned again from the
//! newer snapshot, up to [`UPDATE_ATTEMPTS`] times (with a random pause), then
//! answered `409 conflict`; so a revoke
//! racing an add never brings the revoked key back, two creates of one id
//! never both succeed, and two schema PUTs make two versions. Writes of one
//! gateway are also serialized, so they never race each other.

use std::sync::Arc;
use std::time::Duration;

use proto::config::{conditional_key, ConditionalWrite, ConfigRecord, ConfigSnapshot};
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
    #[error("{0} concurrent changes won over this one; retry")]
    Conflict(usize),
}

/// How often a change that lost its race is planned again before 409.
const UPDATE_ATTEMPTS: usize = 16;

pub struct ConfigLog {
    pub follower: Arc<ConfigFollower>,
    producer: FutureProducer,
    /// One change at a time from this gateway.
    updating: tokio::sync::Mutex<()>,
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
            updating: tokio::sync::Mutex::new(()),
        })
    }

    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.follower.snapshot()
    }

    pub fn is_caught_up(&self) -> bool {
        self.follower.is_caught_up()
    }

    /// Changes one record: `plan` looks at the current snapshot and answers
    /// the record to write under its key (`None`: nothing to change) and what
    /// to answer the caller. Written conditionally (see the module doc);
    /// planned again when it lost a race. Returns once this gateway applied
    /// the winning write.
    pub async fn update<T, E>(
        &self,
        mut plan: impl FnMut(&ConfigSnapshot) -> Result<(Option<(String, ConfigRecord)>, T), E>,
    ) -> Result<T, E>
    where
        E: From<ConfigLogError>,
    {
        let _one_at_a_time = self.updating.lock().await;
        for _ in 0..UPDATE_ATTEMPTS {
            let snapshot = self.follower.snapshot();
            let (change, answer) = plan(&snapshot)?;
            let Some((key, record)) = change else {
                return Ok(answer);
            };
            let write = ConditionalWrite {
                expect: snapshot.last_set(&key),
                key,
                record,
            };
            let id = uuid::Uuid::now_v7().simple().to_string();
            let offset = self.append(&conditional_key(&id), &write).await?;
            match self.follower.snapshot().write_won(offset) {
                Some(true) => return Ok(answer),
                Some(false) => {
                    // Another gateway is changing the same record: step
                    // aside a random moment so the two stop colliding.
                    let jitter = uuid::Uuid::new_v4().as_u128() % 20;
                    tokio::time::sleep(Duration::from_millis(1 + jitter as u64)).await;
                }
                None => return Err(ConfigLogError::NotApplied(APPLY_TIMEOUT).into()),
            }
        }
        Err(ConfigLogError::Conflict(UPDATE_ATTEMPTS).into())
    }

    /// Appends one record and waits until this gateway applied it; its offset.
    async fn append(
        &self,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<i64, ConfigLogError> {
        let payload = serde_json::to_vec(value).unwrap_or_default();
        let out = FutureRecord::<str, Vec<u8>>::to(self.follower.topic())
            .key(key)
            .payload(&payload);
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
            Ok(delivery.offset)
        } else {
            Err(ConfigLogError::NotApplied(APPLY_TIMEOUT))
        }
    }
}

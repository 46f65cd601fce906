//! The Kafka side of the gateway: one record per event on the raw topic.
//!
//! Guarantee: [`KafkaSink::send_all`] returns `Ok` only after Kafka acknowledged
//! every record (acks=all on an idempotent producer, so a broker-side retry can
//! neither reorder nor duplicate). If any record fails, the call fails and the
//! request is answered 503: records that did get through before the failure are
//! stored, but the producer was told nothing was acknowledged and will retry, so
//! at-least-once holds (a retry with the same `itemId` keeps the same event id).
//!
//! Bound: the call gives up on its own deadline, the delivery timeout counted
//! from its start (queueing included), not on librdkafka's report. librdkafka
//! notices an expired `message.timeout.ms` only when the partition's broker
//! thread wakes up, and with the broker down that thread sleeps through a
//! reconnect backoff of up to `reconnect.backoff.max.ms`: with a 10 s timeout
//! the 503 came 12-20 s after the request. Records still queued at the deadline
//! stay in librdkafka until they time out there too (shortly after; see
//! [`proto::producer`]); one delivered meanwhile is stored although its request
//! got 503, the at-least-once case above.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
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
    #[error("no acknowledgement within the delivery timeout of {0:?}")]
    TimedOut(Duration),
    #[error("the producer's queue is full: Kafka is not keeping up")]
    QueueFull,
}

pub struct KafkaSink {
    /// Replaced as a whole when librdkafka reports a fatal (idempotence) error.
    producer: RwLock<Arc<RawProducer>>,
    client_config: ClientConfig,
    topic: String,
    /// How long [`KafkaSink::send_all`] may take, queueing included.
    delivery_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl KafkaSink {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let mut client_config = proto::producer::raw_producer_config(
            &config.kafka.brokers,
            config.kafka_linger_ms,
            &config.kafka_compression,
        );
        client_config
            .set("client.id", "powehi-ingest-gateway")
            .set(
                "message.timeout.ms",
                config.kafka_delivery_timeout_ms.to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                config.kafka_queue_max_events.to_string(),
            );
        let producer = client_config.create_with_context(AckContext)?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            client_config,
            topic: config.kafka.raw_topic.clone(),
            delivery_timeout: config.delivery_timeout(),
            metrics,
        })
    }

    fn producer(&self) -> Arc<RawProducer> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues every record, then waits for every acknowledgement, all within
    /// the delivery timeout.
    pub async fn send_all(&self, records: &[OutRecord]) -> Result<(), SinkError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.delivery_timeout);
        let producer = self.producer();
        self.deliver(&producer, records, deadline)
            .await
            .map_err(|error| self.failed(&producer, error))?;
        self.metrics
            .kafka_delivery_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn deliver(
        &self,
        producer: &Arc<RawProducer>,
        records: &[OutRecord],
        deadline: tokio::time::Instant,
    ) -> Result<(), SinkError> {
        let acks = Arc::new(Acks::holding());
        for record in records {
            self.enqueue(producer, record, &acks)?;
        }
        acks.reported();
        tokio::time::timeout_at(deadline, AllReported(&acks))
            .await
            .map_err(|_| SinkError::TimedOut(self.delivery_timeout))?;
        match acks.first_error.get() {
            Some(error) => Err(SinkError::Delivery(error.clone())),
            None => Ok(()),
        }
    }

    /// Hands one record to the producer; a full buffer fails the request at
    /// once (see [`SinkError::QueueFull`]).
    fn enqueue(
        &self,
        producer: &Arc<RawProducer>,
        record: &OutRecord,
        acks: &Arc<Acks>,
    ) -> Result<(), SinkError> {
        let pending = BaseRecord::with_opaque_to(&self.topic, acks.clone())
            .key(&record.key)
            .payload(&record.payload);
        // Counted before it is queued: its report can arrive before send returns.
        acks.pending.fetch_add(1, Ordering::Relaxed);
        match producer.send(pending) {
            Ok(()) => Ok(()),
            // The producer's buffer holds more than Kafka takes: the broker is
            // slow or away. Answered 503 at once rather than holding the
            // request's memory until the deadline (what is queued of it may
            // still be delivered: the at-least-once case of the module doc).
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(SinkError::QueueFull)
            }
            Err((error, _)) => Err(SinkError::Delivery(error.to_string())),
        }
    }

    fn failed(&self, producer: &Arc<RawProducer>, error: SinkError) -> SinkError {
        self.metrics.kafka_delivery_errors.inc();
        tracing::warn!(%error, "kafka did not acknowledge a request");
        if let Some(fatal) = producer.client().fatal_error() {
            self.replace_producer(producer, &format!("{fatal:?}"));
        }
        error
    }

    /// An idempotent producer that hit a fatal error refuses everything from then
    /// on; a fresh one (new producer id) takes over. Only the first caller that
    /// sees the broken producer replaces it.
    fn replace_producer(&self, broken: &Arc<RawProducer>, reason: &str) {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, broken) {
            return;
        }
        match self.client_config.create_with_context(AckContext) {
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

/// The gateway's producer: delivery reports count down [`Acks`] (librdkafka's
/// poll thread calls [`AckContext::delivery`]).
type RawProducer = ThreadedProducer<AckContext>;

/// One request's records awaiting their delivery reports. The last report wakes
/// the request: one wake-up per request, where a future per record (rdkafka's
/// `FutureProducer`) cost a channel and a cross-thread wake-up per record.
struct Acks {
    /// Records queued and not yet reported, plus one held by the sender until
    /// every record is queued, so an early report cannot finish the request.
    pending: AtomicUsize,
    first_error: OnceLock<String>,
    waker: AtomicWaker,
}

impl Acks {
    fn holding() -> Self {
        Self {
            pending: AtomicUsize::new(1),
            first_error: OnceLock::new(),
            waker: AtomicWaker::new(),
        }
    }

    /// One record reported (or the sender's hold released).
    fn reported(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }
}

/// Ready once every record of the request has been reported.
struct AllReported<'a>(&'a Acks);

impl Future for AllReported<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let acks = self.0;
        if acks.pending.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        acks.waker.register(cx.waker());
        // Checked again: the last report may have come before the waker was in place.
        if acks.pending.load(Ordering::Acquire) == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<Acks>;

    /// A record purged when its producer is dropped is reported here too, with
    /// an error, so no request waits for a producer that is gone.
    fn delivery(&self, report: &DeliveryResult<'_>, acks: Arc<Acks>) {
        if let Err((error, _)) = report {
            // Only the first error is kept: it is the one the request fails with.
            let _ = acks.first_error.set(error.to_string());
        }
        acks.reported();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::task::{waker, ArcWake};
    use futures::FutureExt;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl ArcWake for CountingWaker {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn queued(records: usize) -> Acks {
        let acks = Acks::holding();
        acks.pending.fetch_add(records, Ordering::Relaxed);
        acks
    }

    #[test]
    fn reports_that_come_while_records_are_still_queued_do_not_finish_the_request() {
        let acks = queued(2);
        acks.reported();
        acks.reported();
        assert!(AllReported(&acks).now_or_never().is_none());
        acks.reported(); // the sender's hold
        assert!(AllReported(&acks).now_or_never().is_some());
    }

    #[test]
    fn the_last_report_wakes_the_waiting_request_once() {
        let acks = queued(3);
        acks.reported();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let request_waker = waker(counter.clone());
        let mut cx = Context::from_waker(&request_waker);
        let mut all = AllReported(&acks);
        assert!(Pin::new(&mut all).poll(&mut cx).is_pending());
        acks.reported();
        acks.reported();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "woken before the last report"
        );
        acks.reported();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut all).poll(&mut cx).is_ready());
    }
}

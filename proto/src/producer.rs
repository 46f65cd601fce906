//! The settings of the producer that writes `powehi.events.raw`: the gateway's,
//! and the benchmark's raw-librdkafka baseline's, which must stay alike for the
//! comparison to mean anything.

use rdkafka::config::ClientConfig;

/// Idempotent, acks=all, LZ4, TCP_NODELAY, bounded memory; `client.id` and
/// `message.timeout.ms` are the caller's.
pub fn raw_producer_config(brokers: &str, linger_ms: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        // TCP_NODELAY, as the Java client does: Nagle held small produce
        // requests back behind unacknowledged ones and stretched the ack tail.
        .set("socket.nagle.disable", "true")
        // Bounded memory: with this much unacknowledged data queued the producer
        // answers QueueFull and callers wait instead of growing the heap.
        .set("queue.buffering.max.kbytes", "131072")
        .set("queue.buffering.max.messages", "500000");
    config
}

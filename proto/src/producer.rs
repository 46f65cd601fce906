//! The settings of the producer that writes `powehi.events.raw`: the gateway's,
//! and the benchmark's raw-librdkafka baseline's, which must stay alike for the
//! comparison to mean anything.

use rdkafka::config::ClientConfig;

/// The codecs of `compression.type` our librdkafka build has (it is built
/// without libzstd, and refuses `zstd` when the producer is created).
pub const COMPRESSIONS: [&str; 4] = ["none", "gzip", "snappy", "lz4"];

/// Snappy, not LZ4: at a moderate rate a produce request carries only a few
/// records, and librdkafka sets up a fresh LZ4 frame context (a zeroed 16 KiB
/// state) for every batch. That took 10% of the gateway's CPU with single-event
/// requests; snappy has no such set-up and gave 14-20% more single-event
/// requests/s at the same CPU (bench/PROFILING.md, "Compression").
pub const DEFAULT_COMPRESSION: &str = "snappy";

/// Idempotent, acks=all, TCP_NODELAY, bounded memory; `client.id` and
/// `message.timeout.ms` are the caller's. `compression` is one of [`COMPRESSIONS`].
pub fn raw_producer_config(brokers: &str, linger_ms: u64, compression: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", compression)
        // TCP_NODELAY, as the Java client does: Nagle held small produce
        // requests back behind unacknowledged ones and stretched the ack tail.
        .set("socket.nagle.disable", "true")
        // Bounded memory: with this much unacknowledged data queued the producer
        // answers QueueFull and callers wait instead of growing the heap.
        .set("queue.buffering.max.kbytes", "131072")
        .set("queue.buffering.max.messages", "500000");
    config
}

//! The settings of the producer that writes `powehi.events.raw`: the gateway's,
//! and the benchmark's raw-librdkafka baseline's, which must stay alike for the
//! comparison to mean anything.

use rdkafka::config::ClientConfig;

/// The codecs of `compression.type` our librdkafka build has (it is built
/// without libzstd, and refuses `zstd` when the producer is created).
pub const COMPRESSIONS: [&str; 4] = ["none", "gzip", "snappy", "lz4"];

/// LZ4 by default: with large batches the raw producer moves a third more
/// records per second with LZ4 than with snappy (288,631 and 290,394 against
/// 221,869 and 215,430). Snappy suits small requests: librdkafka sets up a fresh
/// LZ4 frame context (a zeroed 16 KiB state) for every batch, so when a batch
/// holds one to a few records snappy gave the gateway 14-20% more single-event
/// requests/s (bench/PROFILING.md, "Compression").
pub const DEFAULT_COMPRESSION: &str = "lz4";

/// Idempotent, acks=all, TCP_NODELAY, bounded memory, timeouts noticed within
/// a second of expiring even while the broker is down; `client.id` and
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
        // answers QueueFull instead of growing the heap (the gateway then
        // answers 503 at once; the bench's loader waits).
        .set("queue.buffering.max.kbytes", "131072")
        .set("queue.buffering.max.messages", "500000")
        // librdkafka checks a partition's queued records for message.timeout.ms
        // only when its broker thread wakes, and with the broker down that
        // thread sleeps through a reconnect backoff growing to this (10 s by
        // default): records timed out up to 10 s late and held the queue that
        // long, and a broker that came back was found up to 10 s late. 1 s
        // bounds both, at one connection attempt a second while it is down.
        .set("reconnect.backoff.max.ms", "1000");
    config
}

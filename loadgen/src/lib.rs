//! Powehi's load generator and baselines, driven by `bench/run.sh`.
//!
//! Layout:
//! - [`events`]: realistic events (the reference example's shape, varied types,
//!   sizes and sessions), their schemas and bootstrap file, and the Kafka
//!   records the gateway would write for them.
//! - [`rng`]: a seeded PRNG, so loads are reproducible.
//! - [`schedule`]: open-loop due times, coordinated-omission-safe latency.
//! - [`pacer`]: releases open-loop requests at their due times, finer than
//!   tokio's millisecond timer.
//! - [`stats`]: exact percentiles and the one-line reports.
//! - [`http_client`]: a minimal HTTP/1.1 keep-alive client.
//! - [`load`]: N connections, closed or open loop.
//! - subcommands: [`http`] (load on the gateway), [`baseline`] (trivial
//!   actix-web server), [`kafka`] (raw producer, preload, topics),
//!   [`clickhouse`] (raw RowBinary inserts), [`freshness`] (ack → visible),
//!   [`slow_proxy`] (a ClickHouse made slow on demand).
//!
//! Every measurement prints one JSON line on stdout and a readable line on
//! stderr; `bench/run.sh` collects the JSON into BENCHMARKS.md.

pub mod baseline;
pub mod clickhouse;
pub mod events;
pub mod freshness;
pub mod http;
pub mod http_client;
pub mod kafka;
pub mod load;
pub mod pacer;
pub mod rng;
pub mod schedule;
pub mod slow_proxy;
pub mod stats;
pub mod takeover;

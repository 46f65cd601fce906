//! `baseline-http`: the HTTP ceiling. A trivial actix-web server on the same
//! paths as the gateway that reads the whole body and answers `{"updated":0}`,
//! with as many workers as the gateway uses by default (one per core). What the
//! gateway reaches as a share of this is what its own work costs.
//!
//! With `--kafka-topic` it is the floor of any gateway that answers only once
//! Kafka has the data: each body goes to Kafka as one record, with the gateway's
//! producer settings, and the answer waits for its acknowledgement. No parsing,
//! no authentication, no envelope: what is left is HTTP plus the Kafka round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::kafka::ProducerArgs;

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// Path prefix, like the gateway's (`/powehi`); `/smile` is served too.
    #[arg(long, default_value = "/powehi")]
    pub path_prefix: String,
    /// HTTP worker threads (default: one per core, like the gateway).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Forward each body to this topic and answer after Kafka's acknowledgement.
    #[arg(long)]
    pub kafka_topic: Option<String>,
    /// The producer of `--kafka-topic`.
    #[command(flatten)]
    pub producer: ProducerArgs,
}

/// Where `--kafka-topic` sends the bodies.
struct Forward {
    producer: FutureProducer,
    topic: String,
    /// Keys spread the records over the partitions, as sessions do in the gateway.
    next_key: AtomicU64,
}

async fn smile(body: web::Bytes) -> HttpResponse {
    // Touch the body so reading it cannot be optimized away.
    let _ = std::hint::black_box(body.len());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"updated":0}"#)
}

async fn forward(body: web::Bytes, to: web::Data<Forward>) -> HttpResponse {
    let key = to.next_key.fetch_add(1, Ordering::Relaxed).to_string();
    let record = FutureRecord::to(&to.topic).key(&key).payload(body.as_ref());
    match to.producer.send(record, Timeout::Never).await {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"updated":0}"#),
        Err((error, _)) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let prefix = args.path_prefix.trim_end_matches('/').to_string();
    actix_web::rt::System::new().block_on(async move {
        let forward_to = match &args.kafka_topic {
            Some(topic) => {
                let producer = args
                    .producer
                    .producer_for(topic, "powehi-baseline-http")
                    .await?;
                Some(web::Data::from(Arc::new(Forward {
                    producer,
                    topic: topic.clone(),
                    next_key: AtomicU64::new(0),
                })))
            }
            None => None,
        };
        let server = HttpServer::new(move || {
            let app = App::new()
                // The gateway's default body limit.
                .app_data(web::PayloadConfig::new(1024 * 1024));
            match &forward_to {
                Some(to) => app
                    .app_data(to.clone())
                    .route("/smile", web::post().to(forward))
                    .route(&format!("{prefix}/smile"), web::post().to(forward)),
                None => app
                    .route("/smile", web::post().to(smile))
                    .route(&format!("{prefix}/smile"), web::post().to(smile)),
            }
        });
        let server = match args.workers {
            Some(n) => server.workers(n),
            None => server,
        };
        eprintln!("baseline-http listening on {}", args.addr);
        server.bind(&args.addr)?.run().await?;
        Ok(())
    })
}

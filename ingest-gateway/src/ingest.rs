//! `POST /smile` and `POST /context`: the hot path.
//!
//! Order of checks, cheapest first, so a bad request costs little: readiness
//! (503 `not_ready` while starting: credentials cannot be judged before the
//! config log is replayed), media type, credentials, body size (while reading),
//! JSON shape, rate limit, then each event's envelope. Every event, accepted or
//! refused, becomes one Kafka record stamped with the config-log position this
//! gateway had applied (the worker judges the event by the schemas as of it);
//! if an event names a type unknown at that position the gateway first catches
//! up with the log, since another gateway may just have registered the type.
//! The answer waits for all records to be acknowledged (see [`crate::sink`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE, ORIGIN};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use futures::StreamExt;
use proto::config::{ConfigSnapshot, EventPolicy};
use proto::reason::{Reason, ReasonCode};
use proto::time::corrected_time_ms;
use proto::topics::record_key;
use proto::{check_event, Envelope, EventFields, RequestContext};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::admission::Ticket;
use crate::auth::DataSource;
use crate::encoding::Encoding;
use crate::errors::{ApiError, EventError};
use crate::request_context;
use crate::sink::OutRecord;
use crate::AppState;

/// How much of an over-size event is kept for the event log.
const OVERSIZE_EXCERPT_BYTES: usize = 1024;

/// The body buffer's first size, whatever Content-Length says: it grows with
/// the bytes that actually arrive.
const FIRST_BODY_BUFFER: usize = 16 * 1024;

/// How much of each identifying field of an over-size event is kept.
const OVERSIZE_FIELD_CHARS: usize = 256;

/// Longest a request waits to catch up with the config log when one of its
/// events names a type this gateway does not know.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1);

/// The 200 answer. `updated` keeps the reference meaning (profiles updated by
/// this request); profile work happens later in the workers, so it is 0.
#[derive(Serialize)]
pub(crate) struct Acknowledged {
    updated: u32,
    accepted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<EventError>,
    /// Refused events answered in `errors` but not recorded in the event log
    /// (over the per-request or per-second budget).
    #[serde(skip_serializing_if = "is_zero")]
    unrecorded: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
    /// Unomi's ContextRequest names the session in the body (`/context`).
    #[serde(default)]
    session_id: Option<String>,
}

/// A request's events, and the session its body names, if any.
struct Parsed<'a> {
    events: Vec<&'a RawValue>,
    session_id: Option<String>,
}

pub async fn smile(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = ingest(&request, payload, &state, BatchRule::AtLeastOneEvent)
        .await
        .and_then(Ingested::into_ack)
        .map(|ack| HttpResponse::Ok().json(ack));
    observe(&state, "smile", started, &result);
    result
}

/// `POST /context`: ingests like `/smile`, then answers the profile of the
/// session (Apache Unomi's context.json is the model). The session is the
/// `sessionId` query parameter, else that of the first accepted event; with
/// the parameter the events array may be empty (a pure profile read). The
/// profile reflects the events stored so far: the ones of this request are
/// acknowledged but not yet processed.
pub async fn context(
    request: HttpRequest,
    payload: web::Payload,
    query: web::Query<ContextQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let rule = match query.session_id {
        Some(_) => BatchRule::MayBeEmpty,
        None => BatchRule::MayBeEmptyWithBodySession,
    };
    let result = async {
        let ingested = ingest(&request, payload, &state, rule).await?;
        // The query's session, else the body's (Unomi), else the first event's.
        let session_id = query
            .session_id
            .clone()
            .or_else(|| ingested.body_session.clone())
            .or_else(|| ingested.first_session.clone());
        let source = ingested.source.clone();
        // Events all refused: that answer (with each event's reason) comes first.
        let ack = ingested.into_ack()?;
        let session_id = session_id.ok_or_else(|| {
            ApiError::InvalidBody("no sessionId: pass ?sessionId= or send an accepted event".into())
        })?;
        // Profile reads query ClickHouse: a budget of their own per source.
        source
            .context_budget
            .try_take(1, Instant::now())
            .map_err(|wait| ApiError::RateLimited {
                source_id: source.id.clone(),
                per_second: source.context_budget.events_per_second(),
                what: "profile reads",
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            })?;
        let client_id = source.id.clone();
        // A suppressed profile reads 404, by its sessions too (crate::erasure).
        let config = state.config_log.snapshot();
        if config.is_suppressed(&client_id, &session_id, None) {
            return Err(ApiError::ProfileNotFound);
        }
        let profile = state
            .profiles
            .for_session(&client_id, &session_id)
            .await
            .map_err(|e| ApiError::ProfileUnavailable(e.to_string()))?;
        if config.is_suppressed_id(&profile.profile_id) {
            return Err(ApiError::ProfileNotFound);
        }
        // Whoever holds a session id may read its anonymous profile; an
        // identified one only with proof of the identity (crate::identity).
        let proven = profile.anonymous
            || source.identity.as_ref().is_some_and(|key| {
                key.verifies(&profile.profile_id, query.profile_id_hash.as_deref())
            });
        let profile = if proven { profile } else { profile.redacted() };
        Ok(HttpResponse::Ok().json(ContextAnswer {
            ack,
            session_id,
            profile_id: profile.profile_id.clone(),
            profile_properties: &profile.properties,
            redacted: !proven,
            profile: &profile,
        }))
    }
    .await;
    observe(&state, "context", started, &result);
    result
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextQuery {
    session_id: Option<String>,
    /// Proof that the caller is the session's identified profile: hex
    /// HMAC-SHA256 of its profile id under the source's identity secret.
    profile_id_hash: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextAnswer<'a> {
    #[serde(flatten)]
    ack: Acknowledged,
    session_id: String,
    profile_id: String,
    profile_properties: &'a std::collections::BTreeMap<String, Box<RawValue>>,
    /// An identified profile answered without its data: no valid `profileIdHash`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
    profile: &'a crate::profiles::Profile,
}

pub(crate) fn observe(
    state: &AppState,
    route: &str,
    started: Instant,
    result: &Result<HttpResponse, ApiError>,
) {
    let status = match result {
        Ok(response) => response.status(),
        Err(error) => actix_web::ResponseError::status_code(error),
    };
    let metrics = &state.metrics;
    metrics
        .http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BatchRule {
    AtLeastOneEvent,
    MayBeEmpty,
    /// Empty only when the body names a session (`/context` without `?sessionId=`).
    MayBeEmptyWithBodySession,
}

/// What a request did: acknowledged events and per-event refusals.
pub(crate) struct Ingested {
    source: Arc<DataSource>,
    accepted: usize,
    refused: usize,
    errors: Vec<EventError>,
    /// Refused events not recorded in the event log.
    unrecorded: usize,
    /// Session of the first accepted event.
    first_session: Option<String>,
    /// Session the body names (Unomi's ContextRequest).
    body_session: Option<String>,
}

impl Ingested {
    /// The 200 body, or the 400 when events were sent and none was accepted.
    pub(crate) fn into_ack(self) -> Result<Acknowledged, ApiError> {
        if self.accepted == 0 && self.refused > 0 {
            return Err(ApiError::AllEventsRefused {
                count: self.refused,
                errors: self.errors,
                unrecorded: self.unrecorded,
            });
        }
        Ok(Acknowledged {
            updated: 0,
            accepted: self.accepted,
            errors: self.errors,
            unrecorded: self.unrecorded,
        })
    }
}

async fn ingest(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    rule: BatchRule,
) -> Result<Ingested, ApiError> {
    let (received_at_ms, encoding) = open(request, state)?;
    let source = authenticate(request, state)?;
    check_origin(request, &source)?;
    // Held until the answer: the body and the records made of it.
    let mut ticket = state.admission.enter()?;
    let limit = state.config.max_body_bytes;
    let body = read_decoded_body(request, payload, encoding, limit, state, &mut ticket).await?;
    let batch = parse_batch(&body, rule)?;
    let mut ingested = accept(
        request,
        &batch.events,
        source,
        received_at_ms,
        &mut ticket,
        state,
    )
    .await?;
    ingested.body_session = batch.session_id;
    Ok(ingested)
}

/// What every ingest route checks before anything else: the gateway can
/// judge credentials, and the body's media type and encoding are ones it
/// reads. Answers when the request was received and how its body is encoded.
pub(crate) fn open(request: &HttpRequest, state: &AppState) -> Result<(i64, Encoding), ApiError> {
    let received_at_ms = Utc::now().timestamp_millis();
    if let Some(reason) = state.config_not_ready() {
        return Err(ApiError::NotReady(reason));
    }
    check_media_type(request)?;
    Ok((received_at_ms, content_encoding(request)?))
}

/// Refuses a request from a page whose origin `source` does not allow (see
/// [`crate::cors`]); an `Origin` that is not ASCII is no allowed origin either.
pub(crate) fn check_origin(request: &HttpRequest, source: &DataSource) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("(not ASCII)");
    if source.allows_origin(origin) {
        return Ok(());
    }
    Err(ApiError::OriginNotAllowed {
        origin: origin.to_string(),
        source_id: source.id.clone(),
    })
}

/// The request's body, read within `limit` bytes (sent and decoded) and the
/// deadline, and decoded, its bytes counted in `ticket`.
pub(crate) async fn read_decoded_body(
    request: &HttpRequest,
    payload: web::Payload,
    encoding: Encoding,
    limit: usize,
    state: &AppState,
    ticket: &mut Ticket<'_>,
) -> Result<web::BytesMut, ApiError> {
    let body = read_body(request, payload, limit, &state.config, ticket).await?;
    decode_body(body, encoding, limit, state, ticket)
}

/// The part every ingest protocol shares, once its request is authenticated
/// and its body turned into Powehi events: the per-request cap, the rate
/// limit, one record per event stamped with the config position and the
/// request's context, refusals recorded within their budgets, and the answer
/// only once Kafka has every record.
pub(crate) async fn accept(
    request: &HttpRequest,
    events: &[&RawValue],
    source: Arc<DataSource>,
    received_at_ms: i64,
    ticket: &mut Ticket<'_>,
    state: &AppState,
) -> Result<Ingested, ApiError> {
    let limit = state.config.max_events_per_request;
    if events.len() > limit {
        return Err(ApiError::TooManyEvents {
            count: events.len(),
            limit,
        });
    }
    // Every event is charged, refused ones too: they are recorded as well.
    if let Some(limiter) = &source.rate_limiter {
        limiter
            .try_take(events.len(), Instant::now())
            .map_err(|wait| ApiError::RateLimited {
                source_id: source.id.clone(),
                per_second: limiter.events_per_second(),
                what: "events",
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            })?;
    }

    // Stamped with the config position this gateway had applied: the worker
    // judges the events by the schemas as of it (see event-worker's rows).
    let mut config = state.config_log.snapshot();
    let context = request_context::of(request, &state.trusted_proxies);
    let mut stamp = Stamp {
        client_id: &source.id,
        received_at_ms,
        config_position: config.position,
        context: &context,
        policy: source.policy,
        future_tolerance_ms: i64::from(state.config.future_tolerance_seconds) * 1000,
    };
    let max_event_bytes = state.config.max_event_bytes;
    let mut built = build_records(events, &stamp, &config, max_event_bytes);
    if built.unknown_type {
        // Another gateway may have registered the type a moment ago: judging
        // these events by this gateway's older position would reject them
        // for good. Catch up with the log first (bounded; coalesced).
        if let Some(position) = state.config_log.follower.catch_up(CATCH_UP_TIMEOUT).await {
            if position > stamp.config_position {
                state.metrics.config_catch_ups.inc();
                config = state.config_log.snapshot();
                stamp.config_position = config.position;
                built = build_records(events, &stamp, &config, max_event_bytes);
            }
        }
    }
    let Built {
        mut records,
        refusals,
        errors,
        first_session,
        suppressed,
        ..
    } = built;
    // Answered as accepted (a producer must not retry them, nor learn from
    // the answer that the profile is suppressed), counted, never produced.
    state.metrics.events_suppressed.inc_by(suppressed as u64);
    let unrecorded = record_refusals(&mut records, refusals, &source, state);
    // The records are held until Kafka has them, each with its event and the
    // request's context: they count against the in-flight bytes like the body.
    ticket.hold(records.iter().map(|r| r.key.len() + r.payload.len()).sum())?;
    if !records.is_empty() {
        state
            .sink
            .send_all(&records)
            .await
            .map_err(|e| ApiError::KafkaUnavailable(e.to_string()))?;
    }

    let accepted = events.len() - errors.len();
    state
        .metrics
        .events
        .with_label_values(&["accepted"])
        .inc_by(accepted as u64);
    state
        .metrics
        .events
        .with_label_values(&["refused"])
        .inc_by(errors.len() as u64);
    Ok(Ingested {
        source,
        accepted,
        refused: errors.len(),
        errors,
        unrecorded,
        first_session,
        body_session: None,
    })
}

/// JSON, and text/plain because `navigator.sendBeacon` cannot set a JSON type.
/// A request without Content-Type is read as JSON.
/// The request's `Content-Encoding` (see [`crate::encoding`]).
fn content_encoding(request: &HttpRequest) -> Result<Encoding, ApiError> {
    Encoding::parse(
        request
            .headers()
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("(not ASCII)")),
    )
}

fn check_media_type(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/plain" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(text.to_string())),
    }
}

/// The credentials `navigator.sendBeacon` can carry: it sets no headers, so
/// the client id and write key may come as `?clientId=&writeKey=` (write keys
/// are public: they sit in web pages). Headers take precedence.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryCredentials {
    pub(crate) client_id: Option<String>,
    write_key: Option<String>,
}

impl QueryCredentials {
    /// The ones in `query` (none when it does not parse).
    pub(crate) fn from_query(query: &str) -> Option<Self> {
        web::Query::<Self>::from_query(query)
            .ok()
            .map(web::Query::into_inner)
    }
}

fn authenticate(request: &HttpRequest, state: &AppState) -> Result<Arc<DataSource>, ApiError> {
    // Absent or empty: missing. Present but not visible ASCII: no id or key
    // ever is, so the credentials are wrong, not missing.
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_str().ok())
    };
    match (header("x-client-id"), header("x-client-access-token")) {
        (Some(Some(client_id)), Some(Some(token))) => state.registry.authenticate(client_id, token),
        (Some(_), Some(_)) => Err(ApiError::InvalidCredentials),
        _ => {
            let query = QueryCredentials::from_query(request.query_string());
            match query.as_ref().map(|q| (&q.client_id, &q.write_key)) {
                Some((Some(client_id), Some(key))) if !client_id.is_empty() && !key.is_empty() => {
                    state.registry.authenticate(client_id, key)
                }
                _ => Err(ApiError::MissingCredentials),
            }
        }
    }
}

/// Adds to `records` the refused events the budgets let this request record
/// in the event log: at most `POWEHI_MAX_REFUSALS_RECORDED_PER_REQUEST`, and
/// what is left of the source's per-second budget. The others are answered
/// (each has its entry in `errors`) but not recorded: a request whose events
/// are all refused thus writes at most that many records, each no larger than
/// its event plus an envelope, whatever its size. Answers how many were not
/// recorded.
fn record_refusals(
    records: &mut Vec<OutRecord>,
    mut refusals: Vec<OutRecord>,
    source: &DataSource,
    state: &AppState,
) -> usize {
    let wanted = refusals
        .len()
        .min(state.config.max_refusals_recorded_per_request);
    let granted = source.refusal_budget.take_up_to(wanted, Instant::now());
    let unrecorded = refusals.len() - granted;
    refusals.truncate(granted);
    records.append(&mut refusals);
    if unrecorded > 0 {
        state.metrics.refusals_unrecorded.inc_by(unrecorded as u64);
    }
    unrecorded
}

/// The records of a request's events, and its per-event refusals.
struct Built {
    /// Accepted events.
    records: Vec<OutRecord>,
    /// Refused events, each carrying its reasons to the event log.
    refusals: Vec<OutRecord>,
    errors: Vec<EventError>,
    /// Session of the first accepted event.
    first_session: Option<String>,
    /// Some accepted event names a type `config` has no schema for.
    unknown_type: bool,
    /// Accepted events of a suppressed profile (see [`crate::erasure`]):
    /// answered as accepted, never produced.
    suppressed: usize,
}

fn build_records(
    events: &[&RawValue],
    stamp: &Stamp<'_>,
    config: &ConfigSnapshot,
    max_event_bytes: usize,
) -> Built {
    let mut built = Built {
        records: Vec::with_capacity(events.len()),
        refusals: Vec::new(),
        errors: Vec::new(),
        first_session: None,
        unknown_type: false,
        suppressed: 0,
    };
    for (index, event) in events.iter().enumerate() {
        match envelope_for(event, stamp, config, max_event_bytes) {
            Ok(Checked {
                record,
                session_id,
                type_known,
                suppressed,
            }) => {
                built.first_session.get_or_insert(session_id);
                if suppressed {
                    built.suppressed += 1;
                    continue;
                }
                built.unknown_type |= !type_known;
                built.records.push(record);
            }
            Err((reason, record)) => {
                built.errors.push(EventError {
                    index,
                    code: reason.code.as_str(),
                    message: reason.message,
                });
                built.refusals.push(record);
            }
        }
    }
    built
}

/// Reads the body, refusing it as soon as it is known to be over the limit,
/// and giving up when it does not arrive within `POWEHI_BODY_READ_TIMEOUT_MS`
/// (a client dribbling bytes holds a connection, not the gateway). Memory
/// grows with what arrives, never with what is declared, and is counted in
/// the request's `ticket` (see [`crate::admission`]).
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    config: &crate::config::Config,
    ticket: &mut Ticket<'_>,
) -> Result<web::BytesMut, ApiError> {
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let timeout = Duration::from_millis(config.body_read_timeout_ms);
    let read = async {
        let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(FIRST_BODY_BUFFER));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequestStream(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            ticket.hold(chunk.len())?;
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?
}

/// The body as sent, decoded by its `Content-Encoding` within the body limit
/// (see [`crate::encoding`]); bytes counted before and after.
fn decode_body(
    body: web::BytesMut,
    encoding: Encoding,
    limit: usize,
    state: &AppState,
    ticket: &mut Ticket<'_>,
) -> Result<web::BytesMut, ApiError> {
    let bytes = &state.metrics.body_bytes;
    bytes
        .with_label_values(&[encoding.label(), "received"])
        .inc_by(body.len() as u64);
    if encoding == Encoding::Identity {
        bytes
            .with_label_values(&[encoding.label(), "decoded"])
            .inc_by(body.len() as u64);
        return Ok(body);
    }
    let decoded = encoding.decode(&body, limit)?;
    ticket.hold(decoded.len())?;
    bytes
        .with_label_values(&[encoding.label(), "decoded"])
        .inc_by(decoded.len() as u64);
    Ok(web::BytesMut::from(&decoded[..]))
}

fn parse_batch(body: &[u8], rule: BatchRule) -> Result<Parsed<'_>, ApiError> {
    if rule == BatchRule::MayBeEmpty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed {
            events: Vec::new(),
            session_id: None,
        });
    }
    // serde would read the struct from an array too (`[[event, …]]`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::InvalidBody(
            "the body is an array; send an object: {\"events\": [...]}".into(),
        ));
    }
    let batch: Batch<'_> =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => ApiError::InvalidBody(error.to_string()),
            _ => ApiError::MalformedJson(error.to_string()),
        })?;
    let may_be_empty = match rule {
        BatchRule::AtLeastOneEvent => false,
        BatchRule::MayBeEmpty => true,
        BatchRule::MayBeEmptyWithBodySession => batch.session_id.is_some(),
    };
    let events = match batch.events {
        Some(events) => events,
        None if may_be_empty => Vec::new(),
        None => {
            return Err(ApiError::InvalidBody(
                "missing field `events`: send {\"events\": [...]}".into(),
            ))
        }
    };
    if events.is_empty() && !may_be_empty {
        return Err(ApiError::EmptyBatch);
    }
    Ok(Parsed {
        events,
        session_id: batch.session_id,
    })
}

/// What every record of a request carries besides its event.
struct Stamp<'a> {
    client_id: &'a str,
    received_at_ms: i64,
    /// The config-log position this gateway had applied when it took the
    /// request, so the worker judges its events by the schemas as of then.
    config_position: i64,
    /// Where the request came from.
    context: &'a RequestContext<'static>,
    /// The source's policy for unplanned events, applied by the worker.
    policy: EventPolicy,
    /// How far ahead of `received_at_ms` an event's time may be.
    future_tolerance_ms: i64,
}

impl<'a> Stamp<'a> {
    fn envelope<'e>(&self, id: Cow<'e, str>, event: &'e RawValue) -> Envelope<'e>
    where
        'a: 'e,
    {
        let mut envelope = Envelope::new(id, self.client_id, self.received_at_ms, event);
        envelope.config_position = Some(self.config_position);
        envelope.context = self.context.borrowed();
        envelope.policy = self.policy;
        envelope
    }

    /// Refuses an event whose time, corrected for its producer's clock when it
    /// sent `sendAt` (see [`corrected_time_ms`]), is further ahead of this
    /// gateway's clock than the tolerance. The gateway decides, not the worker:
    /// the producer learns it in the answer, and `received_at_ms`, the clock
    /// it is judged by, is this gateway's.
    fn check_time<'e>(&self, fields: EventFields<'e>) -> Result<EventFields<'e>, Reason> {
        let time_stamp_ms = fields.time_stamp.timestamp_millis();
        let send_at_ms = fields.send_at.map(|t| t.timestamp_millis());
        let ahead_ms =
            corrected_time_ms(time_stamp_ms, send_at_ms, self.received_at_ms) - self.received_at_ms;
        if ahead_ms <= self.future_tolerance_ms {
            return Ok(fields);
        }
        let (ahead, tolerance) = (ahead_ms / 1000, self.future_tolerance_ms / 1000);
        let message = if send_at_ms.is_some() {
            format!(
                "timeStamp is {ahead} s later than sendAt, over the tolerance of {tolerance} s: \
                 an event cannot happen long after it was sent"
            )
        } else {
            format!(
                "timeStamp is {ahead} s ahead of the server's clock, over the tolerance of \
                 {tolerance} s: fix the sender's clock, or send sendAt (the time of sending) \
                 so the server can correct it"
            )
        };
        Err(Reason::new(
            ReasonCode::TimeInFuture,
            "$.timeStamp",
            message,
        ))
    }
}

/// An event whose envelope is sound.
struct Checked {
    record: OutRecord,
    session_id: String,
    /// `config` has a schema for its type.
    type_known: bool,
    /// It belongs to a suppressed profile: dropped, not produced.
    suppressed: bool,
}

/// The Kafka record for one event: `Ok` if its envelope is sound, else the
/// refusal together with the record that carries it to the event log.
fn envelope_for(
    event: &RawValue,
    stamp: &Stamp<'_>,
    config: &ConfigSnapshot,
    max_event_bytes: usize,
) -> Result<Checked, (Reason, OutRecord)> {
    let client_id = stamp.client_id;
    if event.get().len() > max_event_bytes {
        let reason = Reason::new(
            ReasonCode::EventTooLarge,
            "$",
            format!(
                "the event is {} bytes, over the limit of {max_event_bytes}",
                event.get().len()
            ),
        );
        let excerpt = oversize_excerpt(event.get());
        let id = new_event_id();
        let mut envelope = stamp.envelope(Cow::Owned(id), &excerpt);
        envelope.refusals.push(reason.clone());
        let record = OutRecord {
            key: client_id.to_string(),
            payload: envelope.to_bytes(),
        };
        return Err((reason, record));
    }
    match check_event(event, client_id).and_then(|fields| stamp.check_time(fields)) {
        Ok(fields) => {
            let id = fields
                .item_id
                .clone()
                .unwrap_or_else(|| Cow::Owned(new_event_id()));
            let envelope = stamp.envelope(id, event);
            let record = OutRecord {
                key: record_key(client_id, &fields.session_id),
                payload: envelope.to_bytes(),
            };
            Ok(Checked {
                record,
                type_known: config.knows_event_type(&fields.event_type),
                suppressed: config.is_suppressed(
                    client_id,
                    &fields.session_id,
                    fields.profile_id.as_deref(),
                ),
                session_id: fields.session_id.into_owned(),
            })
        }
        Err(reason) => {
            let mut envelope = stamp.envelope(Cow::Owned(new_event_id()), event);
            envelope.refusals.push(reason.clone());
            let record = OutRecord {
                key: client_id.to_string(),
                payload: envelope.to_bytes(),
            };
            Err((reason, record))
        }
    }
}

/// A time-ordered id (UUID v7), so ids sort roughly by arrival.
fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What the event log keeps of an over-size event: its identifying fields
/// (so it shows under its type, session and item id), each cut to
/// [`OVERSIZE_FIELD_CHARS`], its size, and its first bytes as `excerpt`, cut
/// on a char boundary. Kafka would refuse it whole; the summary is bounded
/// whatever the event (a 1 MB `sessionId` included).
fn oversize_excerpt(text: &str) -> Box<RawValue> {
    let mut kept = serde_json::Map::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text) {
        for name in [
            "eventType",
            "sessionId",
            "scope",
            "timeStamp",
            "profileId",
            "itemId",
        ] {
            if let Some(value) = fields.get(name).filter(|v| !v.is_object() && !v.is_array()) {
                let value = match value {
                    serde_json::Value::String(s) => {
                        serde_json::Value::String(s.chars().take(OVERSIZE_FIELD_CHARS).collect())
                    }
                    other => other.clone(),
                };
                kept.insert(name.to_string(), value);
            }
        }
    }
    kept.insert("bytes".into(), text.len().into());
    kept.insert(
        "excerpt".into(),
        proto::text::prefix(text, OVERSIZE_EXCERPT_BYTES).into(),
    );
    let summary = serde_json::Value::Object(kept).to_string();
    RawValue::from_string(summary).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_CONTEXT: RequestContext<'static> = RequestContext {
        ip: Cow::Borrowed(""),
        user_agent: Cow::Borrowed(""),
        origin: Cow::Borrowed(""),
        referer: Cow::Borrowed(""),
    };

    /// 2026-12-06T12:00:00Z
    const NOW_MS: i64 = 1_796_558_400_000;

    fn stamp(config_position: i64) -> Stamp<'static> {
        Stamp {
            client_id: "demo",
            received_at_ms: NOW_MS,
            config_position,
            context: &NO_CONTEXT,
            policy: EventPolicy::default(),
            future_tolerance_ms: 600_000,
        }
    }

    #[test]
    fn a_time_ahead_of_the_clock_is_refused_unless_send_at_explains_it() {
        let verdict = |time_stamp: &str, send_at: Option<&str>| {
            let send_at = send_at.map_or(String::new(), |s| format!(r#","sendAt":"{s}""#));
            let event = raw(&format!(
                r#"{{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"{time_stamp}"{send_at}}}"#
            ));
            match envelope_for(&event, &stamp(1), &ConfigSnapshot::default(), 1024) {
                Ok(_) => None,
                Err((reason, _)) => Some(reason.code),
            }
        };
        // Five minutes ahead: within the tolerance.
        assert_eq!(verdict("2026-12-06T12:05:00Z", None), None);
        // An hour ahead, nothing to correct it by: refused.
        assert_eq!(
            verdict("2026-12-06T13:00:00Z", None),
            Some(ReasonCode::TimeInFuture)
        );
        // The device's clock is an hour ahead and says so through sendAt.
        assert_eq!(
            verdict("2026-12-06T12:59:55Z", Some("2026-12-06T13:00:00Z")),
            None
        );
        // Happened an hour after it was sent: refused whatever the clocks.
        assert_eq!(
            verdict("2026-12-06T13:00:00Z", Some("2026-12-06T12:00:00Z")),
            Some(ReasonCode::TimeInFuture)
        );
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }

    #[test]
    fn every_record_carries_the_config_position_of_its_stamp() {
        let accepted = raw(
            r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z"}"#,
        );
        let refused = raw(r#"{"eventType":"view"}"#);
        let oversize = raw(&format!(
            r#"{{"eventType":"view","pad":"{}"}}"#,
            "x".repeat(2000)
        ));
        let stamped = |event: &RawValue| {
            let record = match envelope_for(event, &stamp(42), &ConfigSnapshot::default(), 1024) {
                Ok(Checked { record, .. }) | Err((_, record)) => record,
            };
            Envelope::from_bytes(&record.payload).map(|e| e.config_position)
        };
        assert_eq!(stamped(&accepted), Ok(Some(42)));
        assert_eq!(stamped(&refused), Ok(Some(42)), "refused events too");
        assert_eq!(stamped(&oversize), Ok(Some(42)), "over-size excerpts too");
    }

    #[test]
    fn shape_errors_and_syntax_errors_get_different_codes() {
        let code = |body: &str| {
            parse_batch(body.as_bytes(), BatchRule::AtLeastOneEvent)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code("{\"events\": ["), Some("malformed_json"));
        assert_eq!(code("nope"), Some("malformed_json"));
        assert_eq!(code("{}"), Some("invalid_body"));
        assert_eq!(code("[]"), Some("invalid_body"));
        assert_eq!(code("{\"events\": {}}"), Some("invalid_body"));
        assert_eq!(code("{\"events\": []}"), Some("empty_batch"));
        assert_eq!(code("{\"events\": [1]}"), None);
    }

    #[test]
    fn context_may_read_a_profile_without_events() {
        let empty = |body: &str| {
            parse_batch(body.as_bytes(), BatchRule::MayBeEmpty)
                .map(|b| b.events.len())
                .ok()
        };
        assert_eq!(empty(""), Some(0));
        assert_eq!(empty("{\"events\": []}"), Some(0));
        // Unomi's ContextRequest: the session in the body, events optional.
        assert_eq!(empty("{}"), Some(0), "a known session reads the profile");
        let unomi = parse_batch(
            br#"{"sessionId":"s1"}"#,
            BatchRule::MayBeEmptyWithBodySession,
        );
        assert_eq!(
            unomi.ok().and_then(|b| b.session_id),
            Some("s1".to_string())
        );
        let code = |body: &[u8]| {
            parse_batch(body, BatchRule::MayBeEmptyWithBodySession)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code(b"{}"), Some("invalid_body"), "no session anywhere");
        assert_eq!(code(br#"{"events":[]}"#), Some("empty_batch"));
    }

    #[test]
    fn refused_event_still_travels_with_its_reason() {
        let event = RawValue::from_string(r#"{"eventType":"view"}"#.to_string())
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        let Err((reason, record)) =
            envelope_for(&event, &stamp(1), &ConfigSnapshot::default(), 1024)
        else {
            panic!("an event without sessionId must be refused")
        };
        assert_eq!(reason.code, ReasonCode::MissingSessionId);
        let decoded = Envelope::from_bytes(&record.payload)
            .map(|e| (e.refusals.len(), e.event.get().to_string()));
        assert_eq!(decoded, Ok((1, r#"{"eventType":"view"}"#.to_string())));
    }

    #[test]
    fn oversize_event_is_recorded_as_a_short_excerpt() {
        let big = format!(r#"{{"eventType":"view","pad":"{}"}}"#, "é".repeat(2000));
        let event = RawValue::from_string(big).unwrap_or_else(|_| RawValue::NULL.to_owned());
        let Err((reason, record)) =
            envelope_for(&event, &stamp(1), &ConfigSnapshot::default(), 1024)
        else {
            panic!("an event over the limit must be refused")
        };
        assert_eq!(reason.code, ReasonCode::EventTooLarge);
        assert!(record.payload.len() < 3 * OVERSIZE_EXCERPT_BYTES);
        let envelope =
            Envelope::from_bytes(&record.payload).map(|e| proto::best_effort_ids(e.event));
        assert_eq!(
            envelope.map(|ids| ids.event_type),
            Ok("view".to_string()),
            "identifying fields are kept"
        );
    }

    #[test]
    fn item_id_becomes_the_event_id() {
        let event = RawValue::from_string(
            r#"{"eventType":"view","sessionId":"s","scope":"demo","timeStamp":"2021-10-15T18:49:00Z","itemId":"evt-1"}"#
                .to_string(),
        )
        .unwrap_or_else(|_| RawValue::NULL.to_owned());
        let record = envelope_for(&event, &stamp(1), &ConfigSnapshot::default(), 1024)
            .map_err(|(r, _)| r.message);
        let id = record.map(|c| Envelope::from_bytes(&c.record.payload).map(|e| e.id.into_owned()));
        assert_eq!(id, Ok(Ok("evt-1".to_string())));
    }
}

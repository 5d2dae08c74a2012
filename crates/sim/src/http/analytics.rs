//! The endpoints a back-fill reads, answered from what the generator did
//! (`state/history.rs`): the conversation and user details queries of the analytics API,
//! with their interval rules and paging, the live conversation, and users' current
//! presence and routing status. The analytics queries and the live conversation check
//! their permission; every call counts against the token's rate limit.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::auth::Auth;
use super::error::ApiError;
use crate::state::history::ConversationFilter;
use crate::state::refusal::Refusal;
use crate::state::{Caller, Core, format_ms};

/// Results a query can page through at most (FACT: pagination stops at 100,000).
const MAX_RESULTS: usize = 100_000;
/// Ids one bulk presence call takes.
const BULK_IDS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsQuery {
    interval: String,
    #[serde(default)]
    segment_filters: Vec<Filter>,
    #[serde(default)]
    conversation_filters: Vec<Filter>,
    #[serde(default)]
    user_filters: Vec<Filter>,
    #[serde(default)]
    paging: Option<Paging>,
    #[serde(default)]
    order: Option<String>,
}

/// A conversation details job's request: the query's, less paging, with
/// `startOfDayIntervalMatching`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    interval: String,
    #[serde(default)]
    segment_filters: Vec<Filter>,
    #[serde(default)]
    conversation_filters: Vec<Filter>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    start_of_day_interval_matching: bool,
}

#[derive(Debug, Deserialize)]
struct Filter {
    #[serde(default)]
    predicates: Vec<Predicate>,
    #[serde(default)]
    clauses: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
struct Predicate {
    dimension: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    page_size: Option<usize>,
    page_number: Option<usize>,
}

fn need(caller: &Caller, permission: &'static str) -> Result<(), ApiError> {
    match caller.client.has(permission) {
        true => Ok(()),
        false => Err(ApiError(Refusal::MissingPermission(permission))),
    }
}

/// `start/end`, each ISO-8601, end after start.
fn interval(text: &str) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        ApiError::bad_request(format!(
            "interval {text:?} must be two ISO-8601 times, start/end (2026-12-04T10:00:00.000Z/2026-12-04T11:00:00.000Z)"
        ))
    };
    let (a, b) = text.split_once('/').ok_or_else(bad)?;
    let a = OffsetDateTime::parse(a, &Rfc3339).map_err(|_| bad())?;
    let b = OffsetDateTime::parse(b, &Rfc3339).map_err(|_| bad())?;
    if b <= a {
        return Err(ApiError::bad_request(format!(
            "interval {text:?} ends before it starts"
        )));
    }
    Ok((a, b))
}

/// The most days an interval may span: 7 without a filter, 31 with one (FACT).
fn check_span(from: OffsetDateTime, to: OffsetDateTime, filtered: bool) -> Result<(), ApiError> {
    let days = if filtered { 31 } else { 7 };
    if to - from > time::Duration::days(days) {
        return Err(ApiError::bad_request(format!(
            "the interval may span at most {days} days {}",
            if filtered {
                "with a filter"
            } else {
                "without a filter (31 with one)"
            }
        )));
    }
    Ok(())
}

/// `(size, number)`: size 1 to the largest the service takes (default 25), number from 1,
/// and never past the 100,000th result.
fn paging(core: &Core, paging: &Option<Paging>) -> Result<(usize, usize), ApiError> {
    let most = core.config.unknowns.analytics_page_size.max(1);
    let size = paging.as_ref().and_then(|p| p.page_size).unwrap_or(25);
    let number = paging.as_ref().and_then(|p| p.page_number).unwrap_or(1);
    if size == 0 || size > most {
        return Err(ApiError::bad_request(format!(
            "paging.pageSize must be 1 to {most}, not {size}"
        )));
    }
    if number == 0 {
        return Err(ApiError::bad_request("paging.pageNumber starts at 1"));
    }
    if size.saturating_mul(number) > MAX_RESULTS {
        return Err(ApiError::bad_request(format!(
            "pagination stops at {MAX_RESULTS} results: narrow the interval"
        )));
    }
    Ok((size, number))
}

/// Every predicate of the filters and their clauses: dimension and value.
fn predicates(filters: &[Filter]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in filters {
        for p in &f.predicates {
            if let (Some(d), Some(v)) = (&p.dimension, &p.value) {
                out.push((d.clone(), v.clone()));
            }
        }
        out.extend(predicates(&f.clauses));
    }
    out
}

/// What analytics shows now: what happened up to its delay ago.
fn as_of(core: &Core) -> OffsetDateTime {
    core.config.now() - core.config.unknowns.analytics_delay
}

fn page(mut all: Vec<Value>, size: usize, number: usize, key: &str) -> Value {
    let total = all.len();
    let start = ((number - 1) * size).min(total);
    let rows: Vec<Value> = all.drain(start..(start + size).min(total)).collect();
    let mut out = json!({ "totalHits": total });
    if !rows.is_empty() {
        out[key] = Value::Array(rows);
    }
    out
}

/// The conversation filter of a query's or job's segment and conversation filters, and
/// whether it filters at all.
fn conversation_filter(
    segment: &[Filter],
    conversation: &[Filter],
) -> Result<(ConversationFilter, bool), ApiError> {
    let mut filter = ConversationFilter::default();
    for (dimension, value) in predicates(segment)
        .into_iter()
        .chain(predicates(conversation))
    {
        match dimension.as_str() {
            "queueId" => filter.queues.push(value),
            "userId" => filter.users.push(value),
            "conversationId" => filter.conversations.push(value),
            other => {
                return Err(ApiError::bad_request(format!(
                    "the simulator filters on queueId, userId and conversationId, not {other:?}"
                )));
            }
        }
    }
    let filtered =
        !(filter.queues.is_empty() && filter.users.is_empty() && filter.conversations.is_empty());
    Ok((filter, filtered))
}

/// `POST /api/v2/analytics/conversations/details/query`.
pub async fn conversation_details(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Json(q): Json<DetailsQuery>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "analytics:conversationDetail:view")?;
    let (from, to) = interval(&q.interval)?;
    let (filter, filtered) = conversation_filter(&q.segment_filters, &q.conversation_filters)?;
    check_span(from, to, filtered)?;
    let (size, number) = paging(&core, &q.paging)?;
    let mut all = core
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .conversations(from, to, &filter, as_of(&core));
    if q.order.as_deref() == Some("desc") {
        all.reverse();
    }
    Ok(Json(page(all, size, number, "conversations")))
}

/// `POST /api/v2/analytics/users/details/query`.
pub async fn user_details(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Json(q): Json<DetailsQuery>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "analytics:userDetail:view")?;
    let (from, to) = interval(&q.interval)?;
    let mut users = Vec::new();
    for (dimension, value) in predicates(&q.user_filters) {
        match dimension.as_str() {
            "userId" => users.push(value),
            other => {
                return Err(ApiError::bad_request(format!(
                    "the simulator filters users on userId, not {other:?}"
                )));
            }
        }
    }
    check_span(from, to, !users.is_empty())?;
    let (size, number) = paging(&core, &q.paging)?;
    let all = core
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .user_details(from, to, &users, as_of(&core));
    Ok(Json(page(all, size, number, "userDetails")))
}

/// `GET /api/v2/conversations/{id}`: the conversation as its topics carried it last.
pub async fn conversation(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "conversation:communication:view")?;
    let history = core.history.lock().unwrap_or_else(|p| p.into_inner());
    let body = history
        .live(&id)
        .ok_or_else(|| ApiError::not_found(format!("conversation {id} not found")))?;
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("the simulator's snapshot: {e}")))?;
    Ok(Json(v))
}

/// `GET /api/v2/users/presences/purecloud/bulk?id=…` (at most 50 ids).
pub async fn bulk_presence(
    State(core): State<Arc<Core>>,
    Auth(_caller): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<&str> = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.strip_prefix("id="))
        .flat_map(|v| v.split("%2C").flat_map(|v| v.split(',')))
        .filter(|v| !v.is_empty())
        .collect();
    if ids.is_empty() || ids.len() > BULK_IDS {
        return Err(ApiError::bad_request(format!(
            "give 1 to {BULK_IDS} user ids (id=…&id=…), not {}",
            ids.len()
        )));
    }
    let history = core.history.lock().unwrap_or_else(|p| p.into_inner());
    let out: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            let (presence, _) = history.current(id)?;
            let (p, since) = presence?;
            Some(json!({
                "userId": id,
                "source": "PURECLOUD",
                "primary": true,
                "presenceDefinition": {
                    "id": crate::generator::presence_id(p),
                    "systemPresence": p,
                },
                "modifiedDate": format_ms(since),
            }))
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `GET /api/v2/users/{id}/routingstatus`.
pub async fn routing_status(
    State(core): State<Arc<Core>>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let history = core.history.lock().unwrap_or_else(|p| p.into_inner());
    let (_, routing) = history
        .current(&id)
        .ok_or_else(|| ApiError::not_found(format!("user {id} not found")))?;
    let (status, since) =
        routing.ok_or_else(|| ApiError::not_found(format!("user {id} has no routing status")))?;
    Ok(Json(json!({
        "userId": id,
        "status": status,
        "startTime": format_ms(since),
    })))
}

/// Jobs an org keeps at most (the oldest go first), and how long a job's results last.
const JOBS_KEPT: usize = 100;
const JOB_LIFE: time::Duration = time::Duration::days(1);

/// Where the data lake the jobs read is now: `analytics_lake_delay` behind.
fn lake(core: &Core) -> OffsetDateTime {
    core.config.now() - core.config.unknowns.analytics_lake_delay
}

/// `POST /api/v2/analytics/conversations/details/jobs`: every conversation whose life
/// overlaps the interval (from the start of its first day with
/// `startOfDayIntervalMatching`), as the data lake holds it now; 202 with the job's id.
pub async fn submit_job(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Json(q): Json<JobRequest>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    need(&caller, "analytics:conversationDetail:view")?;
    let (from, to) = interval(&q.interval)?;
    let (filter, _) = conversation_filter(&q.segment_filters, &q.conversation_filters)?;
    // The service's own span limit for jobs is not documented; the simulator keeps the
    // queries' limit with a filter.
    check_span(from, to, true)?;
    let available = lake(&core);
    let mut rows = core
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .overlapping(
            from,
            to,
            &filter,
            available,
            q.start_of_day_interval_matching,
        );
    if q.order.as_deref() == Some("desc") {
        rows.reverse();
    }
    let now = core.config.now();
    let id = crate::rng::Rng::from_entropy().uuid();
    let mut jobs = core.jobs.lock().unwrap_or_else(|p| p.into_inner());
    jobs.retain(|_, j| j.expires > now);
    while jobs.len() >= JOBS_KEPT {
        let Some(oldest) = jobs
            .iter()
            .min_by_key(|(_, j)| j.submitted)
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        jobs.remove(&oldest);
    }
    jobs.insert(
        id.clone(),
        crate::state::Job {
            client: caller.client.id.clone(),
            submitted: now,
            ready: now + core.config.unknowns.analytics_job_time,
            expires: now + JOB_LIFE,
            available,
            rows,
        },
    );
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "jobId": id })),
    ))
}

/// A job of the caller's client, or 404.
fn job_of<'a>(
    jobs: &'a std::collections::HashMap<String, crate::state::Job>,
    caller: &Caller,
    id: &str,
) -> Result<&'a crate::state::Job, ApiError> {
    jobs.get(id)
        .filter(|j| j.client == caller.client.id)
        .ok_or_else(|| ApiError::not_found(format!("no details job {id}")))
}

/// `GET /api/v2/analytics/conversations/details/jobs/{id}`: its state.
pub async fn job_status(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "analytics:conversationDetail:view")?;
    let jobs = core.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let job = job_of(&jobs, &caller, &id)?;
    let now = core.config.now();
    let mut out = json!({
        "id": id,
        "state": if now >= job.ready { "FULFILLED" } else { "PENDING" },
        "submissionDate": format_ms(job.submitted),
        "expirationDate": format_ms(job.expires),
    });
    if now >= job.ready {
        out["completionDate"] = json!(format_ms(job.ready));
    }
    Ok(Json(out))
}

/// `GET /api/v2/analytics/conversations/details/jobs/{id}/results?cursor=&pageSize=`: a
/// page of its conversations and, while more follow, the cursor of the next.
pub async fn job_results(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "analytics:conversationDetail:view")?;
    let most = core.config.unknowns.analytics_page_size.max(1);
    let cursor: usize = match q.get("cursor") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("cursor {v:?} is not one this job gave")))?,
    };
    let size = match q.get("pageSize") {
        None => most,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=most).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("pageSize must be 1 to {most}, not {v:?}"))
            })?,
    };
    let jobs = core.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let job = job_of(&jobs, &caller, &id)?;
    if core.config.now() < job.ready {
        return Err(ApiError::bad_request(format!(
            "details job {id} is still PENDING: its results can be read once GET …/jobs/{id} says FULFILLED"
        )));
    }
    let start = cursor.min(job.rows.len());
    let end = (start + size).min(job.rows.len());
    let mut out = json!({
        "conversations": job.rows[start..end].to_vec(),
        "dataAvailabilityDate": format_ms(job.available),
    });
    if end < job.rows.len() {
        out["cursor"] = json!(end.to_string());
    }
    Ok(Json(out))
}

/// `GET /api/v2/analytics/conversations/details/jobs/availability`: how far the data
/// lake the jobs read has caught up.
pub async fn job_availability(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
) -> Result<Json<Value>, ApiError> {
    need(&caller, "analytics:conversationDetail:view")?;
    Ok(Json(
        json!({ "dataAvailabilityDate": format_ms(lake(&core)) }),
    ))
}

//! `GET /api/v2/routing/queues` and `GET /api/v2/users` over the simulated org, paged like
//! the service, so topics can be resolved from queue names and user emails.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use holdline_proto::rest::{EntityListing, EntityRef, Queue, User};

use super::auth::Auth;
use super::error::ApiError;
use crate::org::DIVISION_ID;
use crate::state::Core;

const MAX_PAGE_SIZE: usize = 500;

/// `pageSize` (default 25, at most 500) and 1-based `pageNumber`.
fn paging(q: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    let read = |key: &str, default: usize| -> Result<usize, ApiError> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::bad_request(format!("{key} must be a positive integer, not {v:?}"))
            }),
        }
    };
    Ok((
        read("pageSize", 25)?.min(MAX_PAGE_SIZE),
        read("pageNumber", 1)?,
    ))
}

fn page<T>(all: Vec<T>, size: usize, number: usize, path: &str) -> EntityListing<T> {
    let total = all.len();
    let page_count = total.div_ceil(size).max(1);
    let entities: Vec<T> = all
        .into_iter()
        .skip((number - 1) * size)
        .take(size)
        .collect();
    let next_uri =
        (number < page_count).then(|| format!("{path}?pageSize={size}&pageNumber={}", number + 1));
    EntityListing {
        entities,
        page_size: Some(size as u32),
        page_number: Some(number as u32),
        total: Some(total as u64),
        page_count: Some(page_count as u32),
        next_uri,
        self_uri: Some(format!("{path}?pageSize={size}&pageNumber={number}")),
    }
}

/// Case-insensitive name match with optional leading/trailing `*`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_lowercase(), name.to_lowercase());
    match (p.strip_prefix('*'), p.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') => n.contains(rest.trim_end_matches('*')),
        (Some(rest), None) => n.ends_with(rest),
        (None, Some(rest)) => n.starts_with(rest),
        _ => n == p,
    }
}

fn division() -> Option<EntityRef> {
    Some(EntityRef {
        id: DIVISION_ID.to_owned(),
        name: Some("Home".to_owned()),
    })
}

/// `GET /api/v2/routing/queues?name=&pageSize=&pageNumber=`.
pub async fn queues(
    State(core): State<Arc<Core>>,
    Auth(_caller): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<EntityListing<Queue>>, ApiError> {
    let (size, number) = paging(&q)?;
    let all = core
        .listed_queues()
        .into_iter()
        .filter(|(queue, _)| q.get("name").is_none_or(|p| name_matches(p, &queue.name)))
        .map(|(queue, members)| Queue {
            self_uri: Some(format!("/api/v2/routing/queues/{}", queue.id)),
            id: queue.id,
            name: queue.name,
            division: division(),
            member_count: Some(members as u32),
        })
        .collect();
    Ok(Json(page(all, size, number, "/api/v2/routing/queues")))
}

/// `GET /api/v2/users?pageSize=&pageNumber=`.
pub async fn users(
    State(core): State<Arc<Core>>,
    Auth(_caller): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<EntityListing<User>>, ApiError> {
    let (size, number) = paging(&q)?;
    let all = core
        .listed_users()
        .into_iter()
        .map(|a| User {
            self_uri: Some(format!("/api/v2/users/{}", a.id)),
            id: a.id,
            name: a.name,
            email: Some(a.email),
            state: Some("active".to_owned()),
            division: division(),
        })
        .collect();
    Ok(Json(page(all, size, number, "/api/v2/users")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_edge_wildcards() {
        assert!(name_matches("support", "Support"));
        assert!(name_matches("Sup*", "Support"));
        assert!(name_matches("*port", "Support"));
        assert!(name_matches("*ppo*", "Support"));
        assert!(!name_matches("Sales", "Support"));
    }

    #[test]
    fn pages_link_to_the_next_one() {
        let listing = page((0..5).collect::<Vec<_>>(), 2, 2, "/x");
        assert_eq!(listing.entities, [2, 3]);
        assert_eq!(listing.page_count, Some(3));
        assert_eq!(
            listing.next_uri.as_deref(),
            Some("/x?pageSize=2&pageNumber=3")
        );
        assert_eq!(page((0..5).collect::<Vec<_>>(), 2, 3, "/x").next_uri, None);
    }
}

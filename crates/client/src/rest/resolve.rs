//! Topics from names: `--queue Support` and `--user ada.smith@example.com` become the
//! conversation topics of their ids, looked up over REST.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::rest::api::Api;
use crate::supervisor::client::ClientHandle;

/// `v2.routing.queues.{id}.conversations` for each queue name and
/// `v2.users.{id}.conversations` for each user email.
pub async fn conversation_topics(
    api: &Api,
    queues: &[String],
    users: &[String],
) -> Result<Vec<String>, ClientError> {
    let mut topics = Vec::new();
    for name in queues {
        let found = api.queues(Some(name)).await?;
        let exact: Vec<_> = found
            .iter()
            .filter(|q| q.name.eq_ignore_ascii_case(name))
            .collect();
        match exact.as_slice() {
            [queue] => topics.push(format!("v2.routing.queues.{}.conversations", queue.id)),
            [] => {
                let all = api.queues(None).await?;
                let names: Vec<&str> = all.iter().map(|q| q.name.as_str()).take(20).collect();
                return Err(ClientError::Config(format!(
                    "no queue is named {name:?}; queues include: {}",
                    names.join(", ")
                )));
            }
            many => {
                return Err(ClientError::Config(format!(
                    "{} queues are named {name:?}; use --topic v2.routing.queues.<id>.conversations with one of: {}",
                    many.len(),
                    many.iter()
                        .map(|q| q.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    if !users.is_empty() {
        let all = api.users().await?;
        for email in users {
            let user = all
                .iter()
                .find(|u| {
                    u.email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
                })
                .ok_or_else(|| ClientError::Config(format!("no user has the email {email:?}")))?;
            topics.push(format!("v2.users.{}.conversations", user.id));
        }
    }
    Ok(topics)
}

/// The conversation topics of every queue (`all_queues`) and every user (`all_users`).
pub async fn tracked_topics(api: &Api, config: &ClientConfig) -> Result<Vec<String>, ClientError> {
    let mut topics = Vec::new();
    if config.all_queues {
        let queues = api.queues(None).await?;
        topics.extend(
            queues
                .iter()
                .map(|q| format!("v2.routing.queues.{}.conversations", q.id)),
        );
    }
    if config.all_users {
        let users = api.users().await?;
        topics.extend(
            users
                .iter()
                .filter(|u| u.state.as_deref() != Some("deleted"))
                .map(|u| format!("v2.users.{}.conversations", u.id)),
        );
    }
    Ok(topics)
}

/// Lists the tracked queues and users every `refresh_every` and subscribes the new ones'
/// topics and unsubscribes the deleted ones', until the client stops.
pub async fn track(
    handle: ClientHandle,
    config: ClientConfig,
    mut current: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.refresh_every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            // The client is shutting down (or the handle is gone).
            _ = stop.changed() => return,
            // Time to list again.
            _ = tick.tick() => {}
        }
        let fresh = match tracked_topics(handle.api(), &config).await {
            Ok(topics) => topics,
            Err(e) => {
                tracing::warn!(error = %e, "could not list queues/users; keeping the current topics");
                continue;
            }
        };
        let (now, before): (HashSet<&String>, HashSet<&String>) =
            (fresh.iter().collect(), current.iter().collect());
        let added: Vec<String> = fresh
            .iter()
            .filter(|t| !before.contains(t))
            .cloned()
            .collect();
        let removed: Vec<String> = current
            .iter()
            .filter(|t| !now.contains(t))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            continue;
        }
        tracing::info!(
            added = added.len(),
            removed = removed.len(),
            "tracked queues/users changed"
        );
        if !removed.is_empty() {
            handle.remove_topics(&removed);
        }
        if !added.is_empty()
            && let Err(e) = handle.add_topics(&added)
        {
            tracing::error!(error = %e, "could not subscribe new queues/users");
            continue;
        }
        current = fresh;
    }
}

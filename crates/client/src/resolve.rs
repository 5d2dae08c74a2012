//! Topics from names: `--queue Support` and `--user ada.smith@example.com` become the
//! conversation topics of their ids, looked up over REST.

use crate::api::Api;
use crate::error::ClientError;

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

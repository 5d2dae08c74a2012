//! `holdline topics`: the topic names of an org's queues and users (topics need concrete
//! ids, so "the Support queue" is `v2.routing.queues.<id>.conversations`), and the
//! topics the service offers, as a table or JSON lines.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use holdline_client::rest::api::Api;
use holdline_proto::rest::{Queue, User};
use holdline_proto::topic::templates;
use serde_json::json;

use super::UsageError;
use super::service::ServiceArgs;

/// `holdline topics` flags.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// A queue by name (repeatable).
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// A user by email (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Every queue.
    #[arg(long)]
    all_queues: bool,
    /// Every user.
    #[arg(long)]
    all_users: bool,
    /// The topics the service offers (GET /api/v2/notifications/availabletopics).
    #[arg(long, conflicts_with_all = ["queues", "users", "all_queues", "all_users"])]
    available: bool,
    /// With --available: what each topic carries and the permissions it needs.
    #[arg(long, requires = "available")]
    expand: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// The topic templates about one entity kind: `prefix{id}.<name>`.
fn entity_topics(prefixes: &[&str], id: &str) -> Vec<String> {
    templates()
        .iter()
        .filter_map(|t| {
            let prefix = prefixes.iter().find(|p| t.pattern.starts_with(*p))?;
            let rest = t.pattern[prefix.len()..].strip_prefix("{id}.")?;
            (!rest.contains('.') && !rest.contains('{')).then(|| format!("{prefix}{id}.{rest}"))
        })
        .collect()
}

fn queue_topics(id: &str) -> Vec<String> {
    entity_topics(&["v2.routing.queues.", "v2.analytics.queues."], id)
}

fn user_topics(id: &str) -> Vec<String> {
    entity_topics(&["v2.users.", "v2.analytics.users."], id)
}

/// Runs `topics`.
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let api = args.service.api().await?;
    let mut out = Vec::new();
    if args.available {
        available(&api, &args, &mut out).await?;
    } else {
        let everything =
            args.queues.is_empty() && args.users.is_empty() && !args.all_queues && !args.all_users;
        if everything || args.all_queues || !args.queues.is_empty() {
            let queues = select_queues(&api, &args.queues).await?;
            for q in queues {
                entity(
                    &mut out,
                    args.json,
                    "queue",
                    &q.name,
                    None,
                    &q.id,
                    queue_topics(&q.id),
                );
            }
        }
        if everything || args.all_users || !args.users.is_empty() {
            for u in select_users(&api, &args.users).await? {
                let topics = user_topics(&u.id);
                entity(
                    &mut out,
                    args.json,
                    "user",
                    &u.name,
                    u.email.as_deref(),
                    &u.id,
                    topics,
                );
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Every queue, or those named (each name must match exactly one queue).
async fn select_queues(api: &Api, names: &[String]) -> anyhow::Result<Vec<Queue>> {
    let all = api.queues(None).await?;
    if names.is_empty() {
        return Ok(all);
    }
    let mut picked = Vec::new();
    for name in names {
        let found: Vec<&Queue> = all
            .iter()
            .filter(|q| q.name.eq_ignore_ascii_case(name))
            .collect();
        if found.is_empty() {
            let known: Vec<&str> = all.iter().map(|q| q.name.as_str()).take(20).collect();
            return Err(UsageError(format!(
                "no queue is named {name:?}; queues include: {}",
                known.join(", ")
            ))
            .into());
        }
        picked.extend(found.into_iter().cloned());
    }
    Ok(picked)
}

/// Every user, or those with the emails given.
async fn select_users(api: &Api, emails: &[String]) -> anyhow::Result<Vec<User>> {
    let all: Vec<User> = api
        .users()
        .await?
        .into_iter()
        .filter(|u| u.state.as_deref() != Some("deleted"))
        .collect();
    if emails.is_empty() {
        return Ok(all);
    }
    let mut picked = Vec::new();
    for email in emails {
        let user = all
            .iter()
            .find(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .ok_or_else(|| UsageError(format!("no user has the email {email:?}")))?;
        picked.push(user.clone());
    }
    Ok(picked)
}

fn entity(
    out: &mut Vec<u8>,
    json: bool,
    kind: &str,
    name: &str,
    email: Option<&str>,
    id: &str,
    topics: Vec<String>,
) {
    if json {
        let mut record = json!({"kind": kind, "name": name, "id": id, "topics": topics});
        if let Some(email) = email {
            record["email"] = json!(email);
        }
        let _ = writeln!(out, "{record}");
        return;
    }
    let who = email.map_or_else(|| name.to_owned(), |e| format!("{name} <{e}>"));
    let _ = writeln!(out, "{kind} {who} ({id})");
    for t in topics {
        let _ = writeln!(out, "    {t}");
    }
}

async fn available(api: &Api, args: &TopicsArgs, out: &mut Vec<u8>) -> anyhow::Result<()> {
    for t in api.available_topics().await? {
        if args.json {
            let mut record = json!({"kind": "available", "id": t.id});
            if args.expand {
                record["description"] = json!(t.description);
                record["requires_permissions"] = json!(t.requires_permissions);
                record["transports"] = json!(t.transports);
            }
            let _ = writeln!(out, "{record}");
        } else if args.expand {
            let needs = match t.requires_permissions.is_empty() {
                true => "no permission".to_owned(),
                false => t.requires_permissions.join(", "),
            };
            let what = t.description.as_deref().unwrap_or_default();
            let _ = writeln!(out, "{}\n    {what}\n    needs: {needs}", t.id);
        } else {
            let _ = writeln!(out, "{}", t.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_and_a_user_get_their_own_topics_from_the_catalogue() {
        let id = "0e185c02-aca1-4a72-82ea-2e78684e2c89";
        let q = queue_topics(id);
        for t in ["routing.queues", "analytics.queues"] {
            assert!(
                q.iter().any(|q| q.starts_with(&format!("v2.{t}.{id}."))),
                "{q:?}"
            );
        }
        assert!(
            q.contains(&format!("v2.routing.queues.{id}.conversations")),
            "{q:?}"
        );
        assert!(q.iter().all(|t| t.matches('.').count() == 4), "{q:?}");
        let u = user_topics(id);
        for t in ["presence", "routingStatus", "conversations"] {
            assert!(u.contains(&format!("v2.users.{id}.{t}")), "{u:?}");
        }
        for t in q.iter().chain(&u) {
            holdline_proto::topic::expand(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}

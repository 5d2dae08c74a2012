//! Topic names: validation against the known families, combined topics
//! (`v2.users.{id}?presence&routingStatus`) and "did you mean" suggestions for names that do
//! not exist (such as the often-quoted but non-existent `v2.conversations.{id}`).

mod catalog;

pub use catalog::{Family, Template, templates};
use catalog::{Seg, TEMPLATES};

use crate::suggest::levenshtein;

/// Longest combined topic the service accepts (reference §2.2).
pub const MAX_COMBINED_LEN: usize = 200;
/// Most topics one channel may hold (reference §2.2).
pub const MAX_TOPICS_PER_CHANNEL: usize = 1000;

/// A valid topic name matched to its template.
#[derive(Debug, Clone, Copy)]
pub struct TopicMatch<'a> {
    /// The name as given.
    pub name: &'a str,
    /// The template it matched.
    pub template: &'static Template,
    /// The first id in the name: the user, queue or conversation it is about.
    pub entity_id: Option<&'a str>,
}

impl TopicMatch<'_> {
    /// The family of the topic.
    pub fn family(&self) -> Family {
        self.template.family
    }
}

/// Why a topic name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// An empty name.
    #[error("empty topic name")]
    Empty,
    /// A name with whitespace, control or other characters topics never contain.
    #[error("topic {topic:?} contains {ch:?}; topic names are dot-separated words and ids")]
    InvalidCharacter {
        /// The name as given.
        topic: String,
        /// The first offending character.
        ch: char,
    },
    /// The shape matches a family but an id segment is not a UUID.
    #[error(
        "{segment:?} in {topic:?} is not an id; use the UUID of the user, queue or conversation \
         (resolve names with `holdline topics` or the REST API)"
    )]
    BadId {
        /// The name as given.
        topic: String,
        /// The segment that should be a UUID.
        segment: String,
    },
    /// The right words in the wrong case (topic names are case-sensitive).
    #[error("topic {topic:?} has the wrong case; the service expects {expected:?}")]
    WrongCase {
        /// The name as given.
        topic: String,
        /// The correctly cased name.
        expected: String,
    },
    /// No family has this shape.
    #[error("unknown topic {topic:?}{}", did_you_mean(.suggestions))]
    Unknown {
        /// The name as given.
        topic: String,
        /// The nearest real topic templates, best first.
        suggestions: Vec<String>,
    },
    /// A combined topic longer than [`MAX_COMBINED_LEN`].
    #[error("combined topic is {len} characters; the service accepts at most {MAX_COMBINED_LEN}")]
    CombinedTooLong {
        /// Its length.
        len: usize,
    },
    /// A combined topic with an empty part (`prefix?&a`) or an empty prefix.
    #[error("combined topic {0:?} has an empty part; write it as prefix?a&b")]
    BadCombined(String),
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(" or "))
    }
}

/// True for the canonical 8-4-4-4-12 hex form of a UUID.
pub fn is_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The entity a topic is about: its first segment shaped like a UUID
/// (`v2.routing.queues.<id>.conversations` and `v2.users.<id>?presence` → `<id>`), else the
/// whole topic. Events about one entity share it, so a sink that partitions by it keeps
/// them in order.
pub fn entity(topic: &str) -> &str {
    topic
        .split(['.', '?'])
        .find(|s| is_uuid(s))
        .unwrap_or(topic)
}

fn seg_matches(seg: Seg, part: &str) -> bool {
    match seg {
        Seg::Lit(lit) => lit == part,
        Seg::Id => is_uuid(part),
        Seg::Opaque => !part.is_empty(),
    }
}

/// Matches one (non-combined) topic name against the catalogue.
pub fn classify(name: &str) -> Result<TopicMatch<'_>, TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(TopicError::InvalidCharacter {
            topic: name.to_owned(),
            ch,
        });
    }
    let parts: Vec<&str> = name.split('.').collect();
    for template in TEMPLATES.iter() {
        if template.segs.len() == parts.len()
            && template
                .segs
                .iter()
                .zip(&parts)
                .all(|(s, p)| seg_matches(*s, p))
        {
            let entity_id = template
                .segs
                .iter()
                .zip(&parts)
                .find(|(s, _)| matches!(s, Seg::Id | Seg::Opaque))
                .map(|(_, p)| *p);
            return Ok(TopicMatch {
                name,
                template,
                entity_id,
            });
        }
    }
    Err(near_miss(name, &parts))
}

/// Explains a name that matched no template: bad id, wrong case, or unknown.
fn near_miss(name: &str, parts: &[&str]) -> TopicError {
    for template in TEMPLATES.iter().filter(|t| t.segs.len() == parts.len()) {
        let pairs = || template.segs.iter().zip(parts);
        let literals_ok = pairs().all(|(s, p)| match s {
            Seg::Lit(lit) => lit == p,
            _ => true,
        });
        if let Some((_, bad)) = pairs()
            .find(|(s, p)| !seg_matches(**s, p))
            .filter(|_| literals_ok)
        {
            return TopicError::BadId {
                topic: name.to_owned(),
                segment: (*bad).to_owned(),
            };
        }
        let case_ok = pairs().all(|(s, p)| match s {
            Seg::Lit(lit) => lit.eq_ignore_ascii_case(p),
            _ => seg_matches(*s, p),
        });
        if case_ok {
            let expected: Vec<&str> = pairs()
                .map(|(s, p)| match s {
                    Seg::Lit(lit) => *lit,
                    _ => *p,
                })
                .collect();
            return TopicError::WrongCase {
                topic: name.to_owned(),
                expected: expected.join("."),
            };
        }
    }
    TopicError::Unknown {
        topic: name.to_owned(),
        suggestions: suggest(parts),
    }
}

/// The nearest real topic templates to a name that matched none, best first.
fn suggest(parts: &[&str]) -> Vec<String> {
    let id_of = |parts: &[&str]| parts.iter().find(|p| is_uuid(p)).map(|p| (*p).to_owned());
    let normalised: Vec<&str> = parts
        .iter()
        .map(|p| if is_uuid(p) { "{id}" } else { p })
        .collect();
    let given = normalised.join(".");
    // There is no bare per-conversation topic; these are where its events really are.
    if matches!(normalised.as_slice(), ["v2", "conversations", "{id}"]) {
        let id = id_of(parts).unwrap_or_else(|| "{id}".to_owned());
        return vec![
            "v2.users.{userId}.conversations".to_owned(),
            "v2.routing.queues.{queueId}.conversations".to_owned(),
            format!("v2.detail.events.conversation.{id}.customer.start"),
        ];
    }
    let words: Vec<&str> = normalised
        .iter()
        .copied()
        .filter(|w| *w != "{id}")
        .collect();
    let mut scored: Vec<(usize, usize, &Template)> = TEMPLATES
        .iter()
        .filter(|t| t.primary && t.family != Family::System)
        .map(|t| {
            let shared = words
                .iter()
                .filter(|w| t.pattern.split('.').any(|s| s == **w))
                .count();
            (usize::MAX - shared, levenshtein(&given, &t.pattern), t)
        })
        .collect();
    scored.sort_by_key(|(shared, dist, _)| (*shared, *dist));
    let id = id_of(parts);
    scored
        .into_iter()
        .filter(|(_, dist, t)| *dist <= t.pattern.len().max(given.len()) * 2 / 3)
        .take(3)
        .map(|(_, _, t)| match &id {
            Some(id) => t.pattern.replacen("{id}", id, 1),
            None => t.pattern.clone(),
        })
        .collect()
}

/// Expands a topic that may be combined (`prefix?a&b`) into its single topic names and
/// checks each one. A plain topic comes back as itself.
pub fn expand(name: &str) -> Result<Vec<String>, TopicError> {
    let Some((prefix, rest)) = name.split_once('?') else {
        classify(name)?;
        return Ok(vec![name.to_owned()]);
    };
    if name.len() > MAX_COMBINED_LEN {
        return Err(TopicError::CombinedTooLong { len: name.len() });
    }
    if prefix.is_empty() || rest.split('&').any(str::is_empty) {
        return Err(TopicError::BadCombined(name.to_owned()));
    }
    rest.split('&')
        .map(|suffix| {
            let full = format!("{prefix}.{suffix}");
            classify(&full)?;
            Ok(full)
        })
        .collect()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

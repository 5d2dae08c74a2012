//! The simulated organisation: queues and agents with stable ids derived from the seed, so
//! topics resolved from names (`--queue Support`) are the same on every run.

use crate::rng::Rng;

const QUEUE_NAMES: [&str; 12] = [
    "Support",
    "Sales",
    "Billing",
    "Returns",
    "Technical",
    "Retention",
    "Claims",
    "Bookings",
    "Onboarding",
    "Complaints",
    "Collections",
    "VIP",
];
const FIRST: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kiri",
    "Lena", "Mateo", "Noor", "Oskar", "Priya",
];
const LAST: [&str; 12] = [
    "Smith",
    "Nakamura",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Rossi",
    "Kowalski",
    "Haddad",
    "Silva",
    "Byrne",
    "Novak",
    "Jensen",
];

/// The division every simulated entity lives in.
pub const DIVISION_ID: &str = "5a1eaef9-cee0-4d74-bb65-f66862227bea";

/// A routing queue.
#[derive(Debug, Clone)]
pub struct SimQueue {
    /// Queue id.
    pub id: String,
    /// Queue name.
    pub name: String,
}

/// An agent (a user who takes calls).
#[derive(Debug, Clone)]
pub struct SimAgent {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address (unique).
    pub email: String,
    /// Indexes into [`Org::queues`] of the queues the agent answers.
    pub queues: Vec<usize>,
}

/// Queues and agents.
#[derive(Debug, Clone)]
pub struct Org {
    /// All queues.
    pub queues: Vec<SimQueue>,
    /// All agents.
    pub agents: Vec<SimAgent>,
}

impl Org {
    /// Builds an org of `queues` queues and `agents` agents from a seed. Every queue gets
    /// at least one agent when there are enough agents.
    pub fn generate(seed: u64, queues: usize, agents: usize) -> Org {
        let mut rng = Rng::new(seed ^ 0x6f72_6721);
        let queues: Vec<SimQueue> = (0..queues)
            .map(|i| {
                let base = QUEUE_NAMES[i % QUEUE_NAMES.len()];
                let name = match i / QUEUE_NAMES.len() {
                    0 => base.to_owned(),
                    n => format!("{base} {}", n + 1),
                };
                SimQueue {
                    id: rng.uuid(),
                    name,
                }
            })
            .collect();
        let agents = (0..agents)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len() + i * 5) % LAST.len()];
                let round = i / FIRST.len();
                let suffix = if round == 0 {
                    String::new()
                } else {
                    (round + 1).to_string()
                };
                let email = format!("{first}.{last}{suffix}@example.com").to_ascii_lowercase();
                let mut memberships = Vec::new();
                if !queues.is_empty() {
                    memberships.push(i % queues.len());
                    let extra = rng.below(queues.len());
                    if !memberships.contains(&extra) && rng.chance(0.5) {
                        memberships.push(extra);
                    }
                }
                SimAgent {
                    id: rng.uuid(),
                    name: format!("{first} {last}"),
                    email,
                    queues: memberships,
                }
            })
            .collect();
        Org { queues, agents }
    }

    /// The queue with this id.
    pub fn queue(&self, id: &str) -> Option<&SimQueue> {
        self.queues.iter().find(|q| q.id == id)
    }

    /// The agent with this id.
    pub fn agent(&self, id: &str) -> Option<&SimAgent> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// Number of agents answering queue `index`.
    pub fn member_count(&self, index: usize) -> usize {
        self.agents
            .iter()
            .filter(|a| a.queues.contains(&index))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_org() {
        let (a, b) = (Org::generate(9, 4, 12), Org::generate(9, 4, 12));
        assert_eq!(a.queues[0].id, b.queues[0].id);
        assert_eq!(a.agents[11].email, b.agents[11].email);
        assert_ne!(Org::generate(10, 4, 12).queues[0].id, a.queues[0].id);
    }

    #[test]
    fn emails_are_unique_and_every_queue_is_staffed() {
        let org = Org::generate(1, 12, 40);
        let mut emails: Vec<&str> = org.agents.iter().map(|a| a.email.as_str()).collect();
        emails.sort_unstable();
        emails.dedup();
        assert_eq!(emails.len(), 40);
        assert!((0..12).all(|q| org.member_count(q) > 0));
        assert_eq!(org.queues[0].name, "Support");
    }
}

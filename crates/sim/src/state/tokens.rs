//! Access tokens issued by `POST /oauth/token`: who they belong to, when they expire,
//! whether they were revoked. Channels hang off the token that created them.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use crate::rng::Rng;

/// One issued token.
#[derive(Debug, Clone)]
pub struct TokenRec {
    /// The OAuth client it was issued to.
    pub client_id: String,
    /// When it stops working.
    pub expires: Instant,
    /// Revoked through the fault API.
    pub revoked: bool,
    /// A short, non-secret label for listings and logs.
    pub label: String,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Unknown or revoked.
    Bad,
    /// Past its lifetime.
    Expired,
}

/// All issued tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, TokenRec>,
}

/// Expired tokens are remembered this long so callers get `credentials.expired` rather
/// than `bad.credentials`.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(3600);

impl Tokens {
    /// Issues a new token for `client_id`.
    pub fn issue(&mut self, client_id: &str, ttl: Duration, now: Instant, rng: &mut Rng) -> String {
        let token = format!(
            "{:016x}{:016x}{:016x}",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64()
        );
        let label = format!("tok-{}", &token[..8]);
        self.by_token.insert(
            token.clone(),
            TokenRec {
                client_id: client_id.to_owned(),
                expires: now + ttl,
                revoked: false,
                label,
            },
        );
        token
    }

    /// Checks a presented token.
    pub fn check(&self, token: &str, now: Instant) -> Result<&TokenRec, TokenProblem> {
        match self.by_token.get(token) {
            None => Err(TokenProblem::Bad),
            Some(rec) if rec.revoked => Err(TokenProblem::Bad),
            Some(rec) if rec.expires <= now => Err(TokenProblem::Expired),
            Some(rec) => Ok(rec),
        }
    }

    /// The record of a token, live or not.
    pub fn get(&self, token: &str) -> Option<&TokenRec> {
        self.by_token.get(token)
    }

    /// Marks a token revoked; returns false if it is unknown.
    pub fn revoke(&mut self, token: &str) -> bool {
        self.by_token
            .get_mut(token)
            .map(|rec| rec.revoked = true)
            .is_some()
    }

    /// Live tokens of a client.
    pub fn of_client(&self, client_id: &str, now: Instant) -> Vec<String> {
        self.by_token
            .iter()
            .filter(|(_, r)| r.client_id == client_id && !r.revoked && r.expires > now)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Tokens that have expired or were revoked, and forgets long-dead ones.
    pub fn dead(&mut self, now: Instant) -> Vec<String> {
        self.by_token
            .retain(|_, r| r.expires + REMEMBER_EXPIRED > now);
        self.by_token
            .iter()
            .filter(|(_, r)| r.revoked || r.expires <= now)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_revoke() {
        let mut tokens = Tokens::default();
        let mut rng = Rng::new(1);
        let now = Instant::now();
        let t = tokens.issue("c", Duration::from_secs(10), now, &mut rng);
        assert_eq!(tokens.check(&t, now).unwrap().client_id, "c");
        assert_eq!(
            tokens.check(&t, now + Duration::from_secs(10)).unwrap_err(),
            TokenProblem::Expired
        );
        assert_eq!(tokens.check("nope", now).unwrap_err(), TokenProblem::Bad);
        assert!(tokens.revoke(&t));
        assert_eq!(tokens.check(&t, now).unwrap_err(), TokenProblem::Bad);
        assert_eq!(tokens.dead(now), vec![t]);
    }
}

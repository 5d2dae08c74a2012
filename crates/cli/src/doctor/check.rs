//! A doctor's findings: one check per line, ✓ / ! / ✗ (or · for information), each
//! problem with its fix in one line; as text for people or JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but will bite.
    Warn,
    /// Wrong: the likely cause of the trouble.
    Fail,
    /// Information (a measurement).
    Info,
    /// Not checked, and why: a report with one says so instead of "no problem found".
    Skipped,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Info => "·",
            Status::Skipped => "–",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name: `region`, `websocket url`, `keepalive`, `token`, `probe: close`...
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found, in a sentence or three.
    pub detail: String,
    /// What to do, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Self {
        Check {
            name: name.to_owned(),
            status,
            detail: detail.into(),
            fix,
        }
    }

    /// A passing check.
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Check::new(name, Status::Pass, detail, None)
    }

    /// A warning with its fix.
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check::new(name, Status::Warn, detail, Some(fix.into()))
    }

    /// A failure with its fix.
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check::new(name, Status::Fail, detail, Some(fix.into()))
    }

    /// Information.
    pub fn info(name: &str, detail: impl Into<String>) -> Self {
        Check::new(name, Status::Info, detail, None)
    }

    /// A check that could not run, with what it takes to run it.
    pub fn skipped(name: &str, why: impl Into<String>, to_run: impl Into<String>) -> Self {
        Check::new(name, Status::Skipped, why, Some(to_run.into()))
    }
}

/// Every check of one doctor run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// True when no check failed.
    pub ok: bool,
    /// True when a check that matters was not run: "no problem found" would not be true.
    pub incomplete: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Adds a check.
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Sets `ok` and `incomplete` from the checks.
    pub fn finish(mut self) -> Self {
        self.ok = !self.checks.iter().any(|c| c.status == Status::Fail);
        self.incomplete = self.checks.iter().any(|c| c.status == Status::Skipped);
        self
    }

    /// The checklist for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {:<16} {}", c.status.mark(), c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "  {:<16} → {fix}", "");
            }
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let warns = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        let ran = self
            .checks
            .iter()
            .filter(|c| matches!(c.status, Status::Pass | Status::Warn | Status::Fail))
            .count();
        let skipped: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Skipped)
            .map(|c| c.name.as_str())
            .collect();
        let _ = match (fails, warns, skipped.is_empty()) {
            (0, 0, true) => writeln!(out, "\nNo problem found ({ran} checks)."),
            (0, 0, false) => writeln!(
                out,
                "\nNo problem in the {ran} checks that ran, but {} did not run (the – lines say what they need): this is not a clean bill of health.",
                skipped.join(", ")
            ),
            (0, w, _) => writeln!(out, "\nNo failure; {w} warning(s)."),
            (f, w, _) => writeln!(
                out,
                "\n{f} problem(s), {w} warning(s): fix the ✗ lines first."
            ),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_makes_the_report_not_ok_and_shows_its_fix() {
        let mut r = Report::default();
        r.push(Check::pass("region", "eu-west-1"));
        r.push(Check::fail(
            "keepalive",
            "not a ping",
            "send {\"message\":\"ping\"}",
        ));
        let r = r.finish();
        assert!(!r.ok);
        let text = r.to_text();
        assert!(
            text.contains("✗ keepalive") && text.contains("→ send"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][1]["status"], "fail");
        assert!(json["checks"][0].get("fix").is_none());
    }
}

//! Drain policies (issue 12, part 1): which lots a debit takes from first, versioned, and the
//! schedule of instants from which each applies.
//!
//! - [`Policy::V1`]: emission order `(message_timestamp, credit_ref, credit_index)`: the
//!   reference's, and the default.
//! - [`Policy::V2`]: soonest expiry first, `(expiration_date ASC NULLS LAST, message_timestamp,
//!   credit_ref, credit_index)`, as the reference's unmerged branch (SPEC Part II 6, 8.3).
//!
//! Both drain only lots with something left, valid at the debit's instant and granted at or
//! before it. A message is planned by the policy the [`Schedule`] gives at its own instant, and
//! each history row records it, so that a replay never depends on today's configuration.

use std::fmt;

use crate::Timestamp;

/// A drain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Policy {
    /// Emission order (the reference's).
    #[default]
    V1,
    /// Soonest expiry first; non-expiring lots last.
    V2,
}

/// Where a debit visits a lot: [`Policy::visit_key`], smallest first (v2: the lots that
/// expire, soonest first, then those that never do).
pub type VisitKey = (bool, Option<Timestamp>);

impl Policy {
    /// Every policy, oldest first.
    pub const ALL: [Policy; 2] = [Policy::V1, Policy::V2];

    /// Its number as history rows record it.
    pub fn code(self) -> i16 {
        match self {
            Policy::V1 => 1,
            Policy::V2 => 2,
        }
    }

    /// The policy a history row's number names.
    pub fn from_code(code: i64) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| i64::from(p.code()) == code)
    }

    /// The order a debit under this policy visits lots in: a key per lot, smallest first
    /// (ties keep emission order).
    pub fn visit_key(self, expiration: Option<Timestamp>) -> VisitKey {
        match self {
            Policy::V1 => (false, None),
            Policy::V2 => (expiration.is_none(), expiration),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.code())
    }
}

impl std::str::FromStr for Policy {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Policy, ScheduleError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| ScheduleError(format!("unknown drain policy {s:?} (known: v1, v2)")))
    }
}

/// A schedule that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// Which policy plans a message, by its instant: `base` before the first activation, then each
/// activation's policy from its instant (inclusive) on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    pub base: Policy,
    /// Strictly increasing instants.
    pub activations: Vec<(Timestamp, Policy)>,
}

impl Schedule {
    /// One policy for every instant.
    pub fn only(policy: Policy) -> Schedule {
        Schedule {
            base: policy,
            activations: Vec::new(),
        }
    }

    /// Reads `v1` or `v1,v2@2027-01-01T00:00:00Z[,…]`: a policy, then policies each with the
    /// instant (RFC 3339) it applies from, in increasing order.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let mut parts = text.split(',').map(str::trim);
        let base = parts.next().unwrap_or_default();
        if base.contains('@') {
            return Err(ScheduleError(format!(
                "{base:?}: the first policy applies from the beginning and takes no @instant"
            )));
        }
        let mut schedule = Schedule::only(base.parse()?);
        for part in parts {
            let (policy, at) = part.split_once('@').ok_or_else(|| {
                ScheduleError(format!(
                    "{part:?}: a policy after the first needs the instant it applies from \
                     (POLICY@RFC3339)"
                ))
            })?;
            let at = Timestamp::parse_rfc3339(at)
                .map_err(|e| ScheduleError(format!("{part:?}: {e}")))?;
            if schedule
                .activations
                .last()
                .is_some_and(|(last, _)| at <= *last)
            {
                return Err(ScheduleError(format!(
                    "{part:?}: activation instants must increase"
                )));
            }
            schedule.activations.push((at, policy.parse()?));
        }
        Ok(schedule)
    }

    /// The policy that plans a message of instant `ts`.
    pub fn at(&self, ts: Timestamp) -> Policy {
        self.activations
            .iter()
            .rev()
            .find(|(from, _)| *from <= ts)
            .map_or(self.base, |(_, p)| *p)
    }

    /// The schedule as spans `(until, policy)`, in order: each policy up to the next
    /// activation (exclusive; `None`: forever).
    pub fn spans(&self) -> impl Iterator<Item = (Option<Timestamp>, Policy)> + '_ {
        let ends = (self.activations.iter().map(|(at, _)| Some(*at))).chain([None]);
        let policies = [self.base]
            .into_iter()
            .chain(self.activations.iter().map(|(_, p)| *p));
        ends.zip(policies)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base)?;
        for (at, policy) in &self.activations {
            write!(f, ",{policy}@{}", at.to_rfc3339())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn schedules_read_and_answer_by_instant() {
        let s = Schedule::parse("v1,v2@2027-01-01T00:00:00Z").unwrap();
        assert_eq!(s.at(t("2026-12-31T23:59:59.999999Z")), Policy::V1);
        assert_eq!(s.at(t("2027-01-01T00:00:00Z")), Policy::V2);
        assert_eq!(Schedule::parse(&s.to_string()).unwrap(), s);
        assert_eq!(s.spans().count(), 2);
        assert_eq!(Schedule::parse("v2").unwrap(), Schedule::only(Policy::V2));
        for bad in [
            "",
            "v3",
            "v2@2027-01-01T00:00:00Z",
            "v1,v2",
            "v1,v2@soon",
            "v1,v2@2027-01-01T00:00:00Z,v1@2026-01-01T00:00:00Z",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }
}

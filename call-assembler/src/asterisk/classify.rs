//! Classification: a call's direction, disposition, tenant and the party that answered.

use compact_str::CompactString;

use super::AmiAssembler;
#[cfg(doc)]
use super::AmiAssemblerConfig;
use super::RuleField;
use super::state::{LegState, OpenCall, RuleLeg};
use crate::call::{CallDirection, Party};

impl AmiAssembler {
    fn is_trunk(&self, leg: &RuleLeg<'_>) -> bool {
        self.config
            .trunk_channel_prefixes
            .iter()
            .any(|p| !p.is_empty() && leg.channel.starts_with(p.as_str()))
            || self.config.trunk_contexts.iter().any(|c| c == leg.context)
    }

    /// A call's direction by the rules in the module docs ("The call's figures"): `caller` is
    /// the caller leg, `legs` every leg.
    pub(super) fn direction<'a>(
        &self,
        caller: Option<&RuleLeg<'a>>,
        mut legs: impl Iterator<Item = RuleLeg<'a>>,
        caller_num: &str,
        called: &str,
    ) -> CallDirection {
        let longer = |n: &str| {
            self.config
                .internal_number_max_len
                .is_some_and(|max| n.bytes().filter(u8::is_ascii_digit).count() > max)
        };
        match caller {
            Some(c) if self.is_trunk(c) => CallDirection::Inbound,
            _ if legs.any(|l| self.is_trunk(&l)) => CallDirection::Outbound,
            _ if longer(caller_num) => CallDirection::Inbound,
            _ if longer(called) => CallDirection::Outbound,
            _ => CallDirection::Internal,
        }
    }

    /// The tenant the first of [`AmiAssemblerConfig::tenant_rules`] matching a leg gives, the
    /// legs tried in order (caller leg first); a call without legs is tried as one empty leg
    /// (only `Called` rules and catch-alls can match).
    pub(super) fn tenant_by_rules<'a>(
        &self,
        legs: impl Iterator<Item = RuleLeg<'a>>,
        called: &str,
    ) -> CompactString {
        let rules = &self.config.tenant_rules;
        if rules.is_empty() {
            return CompactString::default();
        }
        fn field<'s>(leg: &RuleLeg<'s>, f: RuleField, called: &'s str) -> &'s str {
            match f {
                RuleField::Context => leg.context,
                RuleField::Channel => leg.channel,
                RuleField::Caller => leg.caller,
                RuleField::Called => called,
                RuleField::Accountcode => leg.accountcode,
            }
        }
        let matching = |leg: &RuleLeg<'_>| {
            rules
                .iter()
                .find(|r| field(leg, r.field, called).starts_with(r.prefix.as_str()))
                .map(|r| CompactString::from(r.tenant.as_str()))
        };
        let mut any = false;
        for leg in legs {
            any = true;
            if let Some(t) = matching(&leg) {
                return t;
            }
        }
        if !any {
            if let Some(t) = matching(&RuleLeg::default()) {
                return t;
            }
        }
        CompactString::default()
    }

    /// The tenant of a call: the first non-empty `TenantID` (caller leg first, then the others
    /// in order of creation), else the first tenant rule matching the caller leg, else the
    /// first matching another leg, else none.
    pub(super) fn tenant(&self, call: &OpenCall) -> CompactString {
        let caller = call.caller();
        let legs = || {
            caller.into_iter().chain(
                call.legs
                    .iter()
                    .filter(move |l| caller.is_none_or(|c| c.uid != l.uid)),
            )
        };
        if let Some(l) = legs().find(|l| !l.tenant.is_empty()) {
            return l.tenant.clone();
        }
        self.tenant_by_rules(legs().map(LegState::rule_leg), &call.called)
    }

    /// The party that answered: the far end of the answering pair, seen from the caller.
    pub(super) fn answerer(&self, call: &OpenCall, a: &str, b: &str) -> Option<Party> {
        let caller = call.caller()?;
        let chain = |uid: &str| -> Vec<&LegState> {
            let mut v: Vec<&LegState> = call.leg(uid).into_iter().collect();
            if let Some(pair) = v.first().and_then(|l| self.local_pair(call, l)) {
                v.push(pair);
            }
            v
        };
        let (ca, cb) = (chain(a), chain(b));
        let far = if ca.iter().any(|l| l.uid == caller.uid) {
            cb
        } else if cb.iter().any(|l| l.uid == caller.uid) {
            ca
        } else {
            // Neither side is the caller's: the side created later answered.
            let created = |c: &Vec<&LegState>| c.first().and_then(|l| l.created.map(|s| s.at));
            if created(&ca) > created(&cb) { ca } else { cb }
        };
        let leg = far.last()?;
        let number = local_exten(&leg.name)
            .map(CompactString::from)
            .unwrap_or_else(|| leg.cid_num.clone());
        Some(Party {
            device: leg.name.clone(),
            name: number,
        })
    }

    /// The other half of a Local channel (`;1` for `;2` and back).
    pub(super) fn local_pair<'c>(
        &self,
        call: &'c OpenCall,
        leg: &LegState,
    ) -> Option<&'c LegState> {
        if !leg.is_local() {
            return None;
        }
        let (base, half) = leg.name.rsplit_once(';')?;
        let other_half = match half {
            "1" => "2",
            "2" => "1",
            _ => return None,
        };
        call.legs.iter().find(|l| {
            l.name
                .rsplit_once(';')
                .is_some_and(|(b, h)| b == base && h == other_half)
        })
    }
}

/// The extension of a Local channel name (`Local/2001@phones-0000002d;2` gives `2001`).
pub(super) fn local_exten(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("Local/")?;
    rest.split_once('@').map(|(e, _)| e)
}

/// A call's disposition (module docs, "The call's figures"), as Asterisk's CDR engine
/// (`cdr.c`) finalizes the rows of the calling channel: `ANSWERED` when answered; else from the
/// dial statuses, the most telling first (`BUSY`, then `CONGESTION`, then `FAILED` for
/// `CHANUNAVAIL`, `FAILED` and the like, then `NO ANSWER` for `NOANSWER` and `CANCEL`); else
/// from the first non-zero hangup cause of `causes` (the calling channel's, then its Local
/// half's): 17 `BUSY`, 34 `CONGESTION`, 3 and 20 `FAILED`, any other `NO ANSWER`; else, when a
/// cause was 0 (the channel went nowhere: an originate to a context that does not exist),
/// `FAILED`; else `NO ANSWER`.
pub(super) fn disposition(
    answered: bool,
    dial_statuses: &[CompactString],
    causes: &[Option<u16>],
) -> &'static str {
    if answered {
        return "ANSWERED";
    }
    const WORDS: [&str; 4] = ["BUSY", "CONGESTION", "FAILED", "NO ANSWER"];
    let rank = |s: &str| match s {
        "BUSY" => Some(0),
        "CONGESTION" => Some(1),
        "CHANUNAVAIL" | "FAILED" | "DONTCALL" | "TORTURE" | "INVALIDARGS" => Some(2),
        "NOANSWER" | "CANCEL" => Some(3),
        _ => None,
    };
    if let Some(best) = dial_statuses.iter().filter_map(|s| rank(s)).min() {
        return WORDS.get(best).copied().unwrap_or("NO ANSWER");
    }
    match causes.iter().flatten().find(|c| **c != 0) {
        Some(17) => "BUSY",
        Some(34) => "CONGESTION",
        Some(3 | 20) => "FAILED",
        Some(_) => "NO ANSWER",
        None if causes.contains(&Some(0)) => "FAILED",
        None => "NO ANSWER",
    }
}

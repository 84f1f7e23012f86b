//! Reading the kernel's ruleset for reports: who else writes the packet
//! mark bits guestwall carries conntrack state in, and how many packets
//! arrived with those bits changed. Read-only, and never on a packet path.

use crate::features::MarkBits;
use crate::names::{TABLE, TAMPER_COUNTER};
use serde_json::Value;
use std::process::Command;

fn nft_json(args: &[&str]) -> Option<Value> {
    let out = Command::new("nft").arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Packets dropped because their conntrack state bits had been changed
/// after guestwall set them (see [`MarkBits::guard`]); `None` when the
/// counter is not there (bridge conntrack is in use, or no tables).
pub fn tamper_count() -> Option<u64> {
    let v = nft_json(&["list", "counter", "bridge", TABLE, TAMPER_COUNTER])?;
    v.get("nftables")?.as_array()?.iter().find_map(|o| o.get("counter")?.get("packets")?.as_u64())
}

/// The rules outside guestwall's tables that write the packet mark in a
/// way that can touch `mark`'s bits, as "family table chain" lines. A
/// value guestwall cannot evaluate (from a map, another field, iptables'
/// MARK target) counts as touching them.
pub fn mark_writers(mark: MarkBits) -> Vec<String> {
    // Table by table, leaving out guestwall's own: with thousands of ports
    // its sets are most of the ruleset, and listing them costs nft seconds.
    let Some(tables) = nft_json(&["list", "tables"]) else { return Vec::new() };
    let mut out = Vec::new();
    for t in tables.get("nftables").and_then(Value::as_array).into_iter().flatten() {
        let Some(t) = t.get("table") else { continue };
        let (Some(family), Some(name)) =
            (t.get("family").and_then(Value::as_str), t.get("name").and_then(Value::as_str))
        else {
            continue;
        };
        if name == TABLE {
            continue;
        }
        if let Some(v) = nft_json(&["list", "table", family, name]) {
            for w in mark_writers_in(&v, mark) {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
    }
    out
}

/// [`mark_writers`] over `nft -j list ruleset` output.
pub fn mark_writers_in(ruleset: &Value, mark: MarkBits) -> Vec<String> {
    let mut out = Vec::new();
    let Some(items) = ruleset.get("nftables").and_then(Value::as_array) else { return out };
    for item in items {
        let Some(rule) = item.get("rule") else { continue };
        let field = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("?");
        if field("table") == TABLE {
            continue;
        }
        let Some(expr) = rule.get("expr").and_then(Value::as_array) else { continue };
        if expr.iter().any(|stmt| writes_bits(stmt, mark.mask())) {
            let line = format!("{} {} chain {}", field("family"), field("table"), field("chain"));
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}

fn writes_bits(stmt: &Value, mask: u32) -> bool {
    if let Some(m) = stmt.get("mangle") {
        let key = m.get("key");
        let is_mark = |k: Option<&Value>, outer: &str| {
            k.and_then(|k| k.get(outer)).and_then(|o| o.get("key")).and_then(Value::as_str) == Some("mark")
        };
        if is_mark(key, "meta") || is_mark(key, "ct") {
            return value_touches(m.get("value"), mask);
        }
        return false;
    }
    // iptables-nft's MARK/CONNMARK targets are opaque here.
    if let Some(xt) = stmt.get("xt") {
        let name = xt.get("name").and_then(Value::as_str).unwrap_or("");
        return name.eq_ignore_ascii_case("mark") || name.eq_ignore_ascii_case("connmark");
    }
    false
}

/// Whether setting the mark to `v` can change bits under `mask`: a
/// constant outside the mask, or `mark & keep | set` that keeps all of the
/// mask and sets none of it, does not.
fn value_touches(v: Option<&Value>, mask: u32) -> bool {
    let Some(v) = v else { return true };
    if let Some(n) = v.as_u64() {
        return (n as u32) & mask != 0;
    }
    // {"|": [{"&": [{"meta": {"key": "mark"}}, KEEP]}, SET]}
    if let Some([lhs, set]) = v.get("|").and_then(Value::as_array).map(Vec::as_slice) {
        let keeps_ours = lhs
            .get("&")
            .and_then(Value::as_array)
            .and_then(|a| a.get(1))
            .and_then(Value::as_u64)
            .is_some_and(|keep| (keep as u32) & mask == mask);
        return !(keeps_ours && set.as_u64().is_some_and(|s| (s as u32) & mask == 0));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(stmt: &str) -> Value {
        serde_json::from_str(&format!(
            r#"{{"nftables": [{{"rule": {{"family": "bridge", "table": "evil", "chain": "c", "handle": 2, "expr": [{stmt}]}}}},
                {{"rule": {{"family": "inet", "table": "guestwall", "chain": "mark_new", "handle": 3, "expr": [{stmt}]}}}}]}}"#
        ))
        .expect("json")
    }

    #[test]
    fn another_writer_of_our_bits_is_found_and_ours_are_not() {
        let m = MarkBits::DEFAULT;
        let or_est =
            r#"{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 33554432]}}}"#;
        assert_eq!(mark_writers_in(&ruleset(or_est), m), vec!["bridge evil chain c".to_string()]);
        let set_const = r#"{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 33554432}}"#;
        assert_eq!(mark_writers_in(&ruleset(set_const), m).len(), 1);
        let xt = r#"{"xt": {"type": "target", "name": "MARK"}}"#;
        assert_eq!(mark_writers_in(&ruleset(xt), m).len(), 1);
    }

    #[test]
    fn writers_of_other_bits_are_left_alone() {
        let m = MarkBits::DEFAULT;
        let low = r#"{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 16384}}"#;
        assert!(mark_writers_in(&ruleset(low), m).is_empty());
        let keep = r#"{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"&": [{"meta": {"key": "mark"}}, 4294967295]}, 16384]}}}"#;
        assert!(mark_writers_in(&ruleset(keep), m).is_empty());
        let counter = r#"{"counter": {"packets": 0, "bytes": 0}}"#;
        assert!(mark_writers_in(&ruleset(counter), m).is_empty());
    }
}

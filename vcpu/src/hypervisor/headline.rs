//! The first line of a refusal, for people: what changed, old → new, and the rule, in at most
//! [`HEADLINE_MAX`] characters (details follow on later lines). Shared by the lock's refusals
//! ([`crate::hypervisor::refusal::LockRefusal`], which the runtime's lock fills in) and the CPU
//! models' own (`model::arm64`'s refusals), so both read alike. It lives at the boundary because
//! the lock's refusal crosses it (`CallError::Refused`) and the boundary imports nothing above it;
//! the models may use the boundary, so they read it from here too.

/// The lock's rule, as the first line of a refusal states it.
pub const LOCK_RULE: &str =
    "the VM has run, its CPU model is locked (only an identical rewrite is allowed)";

/// The most characters the first line of a refusal has: what changed and why it was refused fit
/// in one terminal line or table cell; everything else follows on later lines.
pub const HEADLINE_MAX: usize = 200;

/// The first line of a refusal: `TARGET: CHANGE (and N more) refused: RULE`, at most
/// [`HEADLINE_MAX`] characters. `target` may be empty; `changes` are `WHAT OLD → NEW`, most
/// relevant first. Too long a line is cut with `…`: the change where it takes more than its
/// share, then the rule (the full text always follows in the details).
pub fn headline(target: &str, changes: &[String], rule: &str) -> String {
    let what = changes.first().map_or("the CPU model", String::as_str);
    let more = match changes.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let target = if target.is_empty() {
        String::new()
    } else {
        format!("{target}: ")
    };
    let head = |what: &str| format!("{target}{what}{more} refused: ");
    let rule_share = rule.chars().count().min(HEADLINE_MAX / 2);
    let mut first = head(what);
    let over = first
        .chars()
        .count()
        .saturating_sub(HEADLINE_MAX - rule_share);
    if over > 0 {
        first = head(&cut(what, what.chars().count().saturating_sub(over)));
    }
    let room = HEADLINE_MAX.saturating_sub(first.chars().count());
    first += &cut(rule, room);
    // Only a target longer than the line itself gets here.
    cut(&first, HEADLINE_MAX)
}

/// `text` in at most `chars` characters, ending in `…` when cut.
fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(chars.saturating_sub(1)).collect();
    if chars > 0 {
        kept.push('…');
    }
    kept
}

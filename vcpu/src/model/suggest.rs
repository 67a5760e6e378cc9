//! "Did you mean …?" for names typed by hand: x86 feature names, arm64 registers, fields,
//! features and services, and the keys of a fleet spec all use this one rule.
//!
//! Closeness is the Levenshtein distance (`strsim`) with case ignored, `-` read as `_`, and `_`
//! then ignored; it must be at most a third of the typed name's length (at least 1, at most 3).
//! Ties go to the plain distance, then to the earlier candidate.

/// Levenshtein distance (names are ASCII; `strsim` counts characters).
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

/// Uppercase, with `-` read as `_`: register, field and service names compare this way.
pub fn normalise(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace('-', "_")
}

/// The candidate closest to `wanted`, if any is close enough to be a plausible typo.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = normalise(wanted);
    let wanted_bare = wanted.replace('_', "");
    if wanted_bare.is_empty() {
        return None;
    }
    let limit = (wanted_bare.len() / 3).clamp(1, 3);
    let mut best: Option<((usize, usize), &'a str)> = None;
    for candidate in candidates {
        let spelled = normalise(candidate);
        let bare = edit_distance(&wanted_bare, &spelled.replace('_', ""));
        if bare > limit {
            continue;
        }
        let score = (bare, edit_distance(&wanted, &spelled));
        if best.is_none_or(|(s, _)| score < s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `" — did you mean `x`?"`, or nothing: the tail of every arm64 unknown-name message.
pub fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_deref()
        .map(|s| format!(" — did you mean `{s}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let names = ["ID_AA64ISAR0_EL1", "ID_AA64ISAR1_EL1", "CTR_EL0"];
        assert_eq!(closest("id_aa64isr0_el1", names), Some("ID_AA64ISAR0_EL1"));
        assert_eq!(closest("ctr-el0", names), Some("CTR_EL0"));
        assert_eq!(closest("something else entirely", names), None);
        assert_eq!(closest("", names), None);
        // Keys of a spec: lower case, `_` ignored for closeness.
        let keys = ["name", "vcpus", "memory_mib", "probe_repeats"];
        assert_eq!(closest("vcpu", keys), Some("vcpus"));
        assert_eq!(closest("memorymib", keys), Some("memory_mib"));
        assert_eq!(closest("probe_repeat", keys), Some("probe_repeats"));
        assert_eq!(closest("colour", keys), None);
    }
}

//! "Did you mean …?": the closest known name to a misspelt one, if it is close enough to be a typo.

/// The candidate most similar to `word`, when similar enough (normalized Damerau–Levenshtein ≥ 0.7,
/// or at most two edits for short names).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::normalized_damerau_levenshtein(word, c),
                strsim::damerau_levenshtein(word, c),
            )
        })
        .filter(|&(_, score, edits)| score >= 0.7 || (edits <= 2 && word.len() > 2))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _, _)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_only_near_misses() {
        assert_eq!(closest("cmdd", ["cmd", "needs", "outs"]), Some("cmd"));
        assert_eq!(
            closest("clip-trian", ["clip-train", "prepare"]),
            Some("clip-train")
        );
        assert_eq!(closest("zzz", ["cmd", "needs"]), None);
    }
}

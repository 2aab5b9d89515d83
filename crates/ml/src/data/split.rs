//! A deterministic train/validation split: a sample goes to validation when the blake3 hash of
//! its key, mod 1000, is below `val_permille`. The same key always lands on the same side,
//! whatever the order, the machine or the other samples, so adding data never moves old samples.

/// Which side of the split a sample is on; `"train"` / `"validation"` in caption files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
}

/// The bucket of `key` in `0..1000`.
pub fn bucket(key: &[u8]) -> u32 {
    let hash = blake3::hash(key);
    let first = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (first % 1000) as u32
}

/// [`Split::Validation`] for about `val_permille`/1000 of keys.
pub fn split_of(key: &[u8], val_permille: u32) -> Split {
    if bucket(key) < val_permille {
        Split::Validation
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_close_to_the_asked_fraction() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("shapes/{i:08}")).collect();
        let val = keys
            .iter()
            .filter(|k| split_of(k.as_bytes(), 50) == Split::Validation)
            .count();
        assert!((400..600).contains(&val), "{val} of 10000 at 5%");
        for k in keys.iter().take(100) {
            assert_eq!(split_of(k.as_bytes(), 50), split_of(k.as_bytes(), 50));
            // Growing the validation share only moves samples into validation.
            if split_of(k.as_bytes(), 50) == Split::Validation {
                assert_eq!(split_of(k.as_bytes(), 100), Split::Validation);
            }
        }
        assert!(
            keys.iter()
                .all(|k| split_of(k.as_bytes(), 0) == Split::Train)
        );
        assert!(
            keys.iter()
                .all(|k| split_of(k.as_bytes(), 1000) == Split::Validation)
        );
    }
}

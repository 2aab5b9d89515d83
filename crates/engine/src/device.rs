//! Device names a stage runs on (`device = "…"` in the Stagefile, `vlmflow build --device`).
//!
//! The engine only checks the spelling and passes the name on (to a kind through `StageContext`,
//! to a command as `$VLMFLOW_DEVICE`); a kind decides what the name means. The device's family is
//! part of a stage's key (`key_part`): the same training on a GPU is another artifact than on the
//! CPU, but which GPU of a node ran it is not.

/// Whether `name` is a device name: `cpu`, `cuda` (the first GPU) or `cuda:N`.
pub fn check(name: &str) -> Result<(), String> {
    let ok = match name.strip_prefix("cuda:") {
        Some(index) => !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()),
        None => name == "cpu" || name == "cuda",
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unknown device `{name}`: expected \"cpu\", \"cuda\" or \"cuda:N\" (N the GPU's index)"
        ))
    }
}

/// What of a device name goes into a stage's key: nothing for the CPU (the default, so writing
/// `device = "cpu"` or passing `--device cpu` changes no key), `cuda` for any GPU index.
pub fn key_part(name: &str) -> Option<&str> {
    match name {
        "cpu" => None,
        _ if name.starts_with("cuda") => Some("cuda"),
        _ => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::{check, key_part};

    #[test]
    fn device_names() {
        for ok in ["cpu", "cuda", "cuda:0", "cuda:12"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", ""] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn only_the_device_family_is_keyed() {
        assert_eq!(key_part("cpu"), None);
        assert_eq!(key_part("cuda"), Some("cuda"));
        assert_eq!(key_part("cuda:3"), Some("cuda"));
    }
}

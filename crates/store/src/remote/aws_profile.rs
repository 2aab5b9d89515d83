//! The AWS shared config files (`~/.aws/credentials` and `~/.aws/config`), read as the AWS CLI
//! reads them, for what `object_store` takes only from the environment: a profile's keys, region
//! and endpoint. `AWS_PROFILE` names the profile (`default` otherwise); `AWS_SHARED_CREDENTIALS_FILE`
//! and `AWS_CONFIG_FILE` move the files. The environment wins over the files.

use std::path::{Path, PathBuf};

/// What a profile says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AwsProfile {
    pub name: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Ways of getting credentials that the AWS CLI follows and vlmflow does not.
const UNFOLLOWED: [&str; 5] = [
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The profile the environment names, read from the shared files; `None` when neither file has
/// it and none was named. An error names the file and what to do.
pub fn load() -> Result<Option<AwsProfile>, String> {
    let named = env("AWS_PROFILE").or_else(|| env("AWS_DEFAULT_PROFILE"));
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let read = |path: Option<PathBuf>| -> Result<Option<(PathBuf, String)>, String> {
        let Some(path) = path else { return Ok(None) };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some((path, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    };
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))?;
    let config = read(file("AWS_CONFIG_FILE", "config"))?;
    let name = named.clone().unwrap_or_else(|| "default".into());
    let from_credentials = credentials
        .as_ref()
        .and_then(|(_, text)| section(text, &name, false));
    let from_config = config
        .as_ref()
        .and_then(|(_, text)| section(text, &name, true));
    if from_credentials.is_none() && from_config.is_none() {
        return match named {
            Some(name) => Err(format!(
                "AWS profile `{name}` (AWS_PROFILE) is in neither {} nor {}: add it, or unset \
                 AWS_PROFILE",
                shown(
                    credentials.as_ref().map(|c| c.0.as_path()),
                    "~/.aws/credentials"
                ),
                shown(config.as_ref().map(|c| c.0.as_path()), "~/.aws/config"),
            )),
            None => Ok(None),
        };
    }
    // The credentials file wins over the config file, as for the AWS CLI.
    let pairs: Vec<(String, String)> = from_config
        .into_iter()
        .flatten()
        .chain(from_credentials.into_iter().flatten())
        .collect();
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let profile = AwsProfile {
        name: name.clone(),
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: get("region"),
        endpoint_url: get("endpoint_url"),
    };
    if profile.access_key_id.is_none()
        && env("AWS_ACCESS_KEY_ID").is_none()
        && let Some(way) = UNFOLLOWED.iter().find(|k| get(k).is_some())
    {
        return Err(format!(
            "AWS profile `{name}` gets its credentials through `{way}`, which vlmflow does \
             not follow: export them first (`eval \"$(aws configure export-credentials \
             --profile {name} --format env)\"`)"
        ));
    }
    Ok(Some(profile))
}

/// An environment variable that is set and not empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn shown(path: Option<&Path>, default: &str) -> String {
    path.map_or_else(|| default.to_string(), |p| p.display().to_string())
}

/// The `key = value` pairs of profile `name`: `[name]` in the credentials file; `[profile name]`
/// (or `[default]`) in the config file. Indented lines continue a nested setting (`s3 =` and its
/// sub-keys) and are skipped, as are comments.
fn section(text: &str, name: &str, config_file: bool) -> Option<Vec<(String, String)>> {
    let wanted = |header: &str| {
        let header = header.trim();
        if config_file && name != "default" {
            header
                .strip_prefix("profile")
                .is_some_and(|rest| rest.starts_with(char::is_whitespace) && rest.trim() == name)
        } else {
            header == name || (config_file && header == "profile default")
        }
    };
    let mut found: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(header);
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            let value = value.trim();
            if !value.is_empty() {
                let pairs = found.get_or_insert_with(Vec::new);
                pairs.push((key.trim().to_ascii_lowercase(), value.to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::section;

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile team]
# the team's S3-compatible server
region = us-east-1
endpoint_url = http://127.0.0.1:9000
s3 =
    addressing_style = path

[profile team-ci]
region = ap-south-1
";

    #[test]
    fn a_profile_is_found_by_its_header_in_either_file() {
        let team = section(CONFIG, "team", true).unwrap();
        assert_eq!(
            team,
            [
                ("region".into(), "us-east-1".into()),
                ("endpoint_url".into(), "http://127.0.0.1:9000".into()),
            ]
        );
        let default = section(CONFIG, "default", true).unwrap();
        assert_eq!(default, [("region".into(), "eu-west-1".into())]);
        let credentials = "[team]\naws_access_key_id = AKIA\naws_secret_access_key=s3cr=t\n";
        let keys = section(credentials, "team", false).unwrap();
        assert_eq!(keys[1], ("aws_secret_access_key".into(), "s3cr=t".into()));
    }

    #[test]
    fn a_profile_named_like_another_or_absent_is_not_taken_for_it() {
        assert!(section(CONFIG, "team-c", true).is_none());
        assert!(section(CONFIG, "nobody", true).is_none());
        assert!(
            section("[team]\nregion = x\n", "team", true).is_none(),
            "the config file says `profile team`"
        );
    }
}

//! The config file (where `login` keeps the URL and token) and how the URL
//! and token of a command are chosen.
//!
//! Precedence: `--url` / `ORCH_URL`, then the file, then [`DEFAULT_URL`];
//! `--token` / `ORCH_TOKEN`, then the file's token, but only when the file was
//! written for the same URL, so a token never goes to another server.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Names the config file explicitly.
pub const ENV_CONFIG: &str = "ORCH_CONFIG";
/// The XDG base directory for configuration.
pub const ENV_XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The home directory, for `~/.config` when `XDG_CONFIG_HOME` is unset.
pub const ENV_HOME: &str = "HOME";
/// The controller's default listen address, seen from the same host.
pub const DEFAULT_URL: &str = "https://127.0.0.1:8000";

/// The config file's content.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Base URL of the controller that issued `token` (or its replicas'
    /// URLs, comma-separated).
    #[serde(default)]
    pub url: Option<String>,
    /// Bearer token from the last `login`.
    #[serde(default)]
    pub token: Option<String>,
    /// Who logged in; informative only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The private CA file `login` was given, used again for the same URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Where the config file lives, from the environment as seen through `env`:
/// `$ORCH_CONFIG`, else `$XDG_CONFIG_HOME/orchestrator/config.json` (when
/// absolute, as the XDG spec requires), else `~/.config/orchestrator/config.json`.
/// `None` when none of these is set.
pub fn config_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(explicit) = var(ENV_CONFIG) {
        return Some(PathBuf::from(explicit));
    }
    let base = var(ENV_XDG_CONFIG_HOME)
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| var(ENV_HOME).map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("orchestrator").join("config.json"))
}

/// Reads the config file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<ConfigFile>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let config = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(config))
}

/// Writes the config file readable by its owner only (mode 0600, directory
/// 0700 when created), through a temporary file and a rename, so a crash
/// never leaves half a file.
pub fn save(path: &Path, config: &ConfigFile) -> Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = serde_json::to_string_pretty(config).context("encoding the config")?;
    text.push('\n');
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let written = write_private(&temp, text.as_bytes()).and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// Creates `dir` and its parents; new directories get mode 0700 on Unix.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` to `path` with mode 0600 on Unix, even if it existed with another.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// The URL and token a command uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the controller, or its replicas' URLs comma-separated.
    pub url: String,
    /// Bearer token, if any is known for that URL.
    pub token: Option<String>,
    /// A private CA to trust for that URL, if the config file names one
    /// (`--ca-file` replaces it).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Settings {
    /// Chooses the URL and token from the flags (or their environment
    /// variables; empty counts as unset) and the config file (see the module doc).
    pub fn resolve(url_flag: Option<&str>, token_flag: Option<&str>, file: Option<&ConfigFile>) -> Self {
        let given = |flag: Option<&str>| flag.filter(|v| !v.trim().is_empty()).map(str::to_owned);
        let file_url = file.and_then(|f| f.url.clone()).filter(|u| !u.trim().is_empty());
        let url = given(url_flag)
            .or(file_url)
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let same_server = file.filter(|f| f.url.as_deref().is_some_and(|u| same_url(u, &url)));
        let file_token = same_server
            .and_then(|f| f.token.clone())
            .filter(|t| !t.is_empty());
        Self {
            token: given(token_flag).or(file_token),
            ca_file: same_server.and_then(|f| f.ca_file.clone()),
            url,
        }
    }
}

/// Whether two base URLs (or comma-separated lists of replicas' URLs) name
/// the same controller: the same URLs in the same order, each equal once
/// parsed (case of scheme and host, default port) and without a trailing
/// slash.
pub fn same_url(a: &str, b: &str) -> bool {
    let normal = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|raw| {
                let raw = raw.trim();
                let parsed = reqwest::Url::parse(raw).map_or_else(|_| raw.to_owned(), String::from);
                parsed.trim_end_matches('/').to_owned()
            })
            .collect()
    };
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |name| map.get(name).cloned()
    }

    fn file(url: &str, token: &str) -> ConfigFile {
        ConfigFile {
            url: Some(url.into()),
            token: Some(token.into()),
            username: None,
            ca_file: None,
        }
    }

    #[test]
    fn the_files_ca_is_used_for_its_own_url_only() {
        let stored = ConfigFile {
            ca_file: Some(PathBuf::from("/etc/orch/ca.pem")),
            ..file("https://a:8443", "t")
        };
        let same = Settings::resolve(None, None, Some(&stored));
        assert_eq!(same.ca_file, Some(PathBuf::from("/etc/orch/ca.pem")));
        let other = Settings::resolve(Some("https://b:8443"), None, Some(&stored));
        assert_eq!(other.ca_file, None);
    }

    #[test]
    fn config_path_prefers_orch_config() {
        let vars = env(&[
            ("ORCH_CONFIG", "/etc/orch.json"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_path(vars), Some(PathBuf::from("/etc/orch.json")));
    }

    #[test]
    fn config_path_uses_xdg_config_home() {
        let vars = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            config_path(vars),
            Some(PathBuf::from("/x/orchestrator/config.json"))
        );
    }

    #[test]
    fn config_path_falls_back_to_home() {
        let expected = Some(PathBuf::from("/h/.config/orchestrator/config.json"));
        assert_eq!(config_path(env(&[("HOME", "/h")])), expected);
        let ignored = env(&[
            ("ORCH_CONFIG", ""),
            ("XDG_CONFIG_HOME", "relative"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_path(ignored), expected);
    }

    #[test]
    fn config_path_is_none_without_any_variable() {
        assert_eq!(config_path(env(&[])), None);
    }

    #[test]
    fn flags_win_over_the_file() {
        let stored = file("http://a:8000", "file-token");
        let settings = Settings::resolve(Some("http://b:8000"), Some("flag-token"), Some(&stored));
        assert_eq!(settings.url, "http://b:8000");
        assert_eq!(settings.token.as_deref(), Some("flag-token"));
    }

    #[test]
    fn file_supplies_url_and_token() {
        let stored = file("http://a:8000/", "file-token");
        let settings = Settings::resolve(None, None, Some(&stored));
        assert_eq!(settings.url, "http://a:8000/");
        assert_eq!(settings.token.as_deref(), Some("file-token"));
        let same = Settings::resolve(Some("http://a:8000"), None, Some(&stored));
        assert_eq!(same.token.as_deref(), Some("file-token"));
    }

    #[test]
    fn file_token_is_not_sent_to_another_url() {
        let stored = file("http://a:8000", "file-token");
        let settings = Settings::resolve(Some("http://evil:8000"), None, Some(&stored));
        assert_eq!(settings.token, None);
    }

    #[test]
    fn same_url_ignores_spelling_differences() {
        assert!(same_url("http://h:8000/", "http://h:8000"));
        assert!(same_url("HTTP://H:80/", "http://h"));
        assert!(!same_url("http://h:8000", "https://h:8000"));
        assert!(!same_url("http://h/a", "http://h/b"));
        assert!(same_url("http://a:1/, http://b:2", "http://a:1,http://b:2/"));
        assert!(!same_url("http://a:1,http://b:2", "http://a:1"));
        assert!(!same_url("http://a:1,http://b:2", "http://b:2,http://a:1"));
    }

    #[test]
    fn a_list_saved_by_login_keeps_its_token_for_the_same_list_only() {
        let stored = file("https://a:8000,https://b:8000", "file-token");
        let same = Settings::resolve(None, None, Some(&stored));
        assert_eq!(same.url, "https://a:8000,https://b:8000");
        assert_eq!(same.token.as_deref(), Some("file-token"));
        let spelled = Settings::resolve(Some("https://a:8000/, https://b:8000"), None, Some(&stored));
        assert_eq!(spelled.token.as_deref(), Some("file-token"));
        let other = Settings::resolve(Some("https://a:8000,https://evil:8000"), None, Some(&stored));
        assert_eq!(other.token, None);
    }

    #[test]
    fn default_url_when_nothing_is_given() {
        let settings = Settings::resolve(Some(""), Some(""), None);
        assert_eq!(settings.url, DEFAULT_URL);
        assert_eq!(settings.token, None);
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let stored = file("http://a", "secret-token");
        assert!(!format!("{stored:?}").contains("secret-token"));
        let settings = Settings::resolve(None, None, Some(&stored));
        assert!(!format!("{settings:?}").contains("secret-token"));
    }

    #[test]
    fn save_then_load_round_trips() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nested/orchestrator/config.json");
        let stored = ConfigFile {
            username: Some("alice".into()),
            ..file("http://a:8000", "t0k")
        };
        save(&path, &stored)?;
        assert_eq!(load(&path)?, Some(stored.clone()));
        let replaced = file("http://b", "t1");
        save(&path, &replaced)?;
        assert_eq!(load(&path)?, Some(replaced));
        assert_eq!(fs::read_dir(path.parent().unwrap_or(dir.path()))?.count(), 1);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn save_makes_the_file_private() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.json");
        fs::write(&path, "{}")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        save(&path, &file("http://a", "t"))?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn load_of_a_missing_file_is_none() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(load(&dir.path().join("absent.json"))?, None);
        Ok(())
    }

    #[test]
    fn load_of_a_malformed_file_names_it() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.json");
        fs::write(&path, "not json")?;
        let err = load(&path).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("config.json"), "{err}");
        Ok(())
    }
}

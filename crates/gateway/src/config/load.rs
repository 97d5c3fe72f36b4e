//! Loading: the TOML file, the `OIDC_BFF__*` environment overrides merged
//! over it, `[oidc]` with its `client_secret_file` and `client_key` (a PEM
//! file, read and parsed here), and every error turned
//! into a [`Problem`] that names its key and origin.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use oidc_bff::OidcConfig;
use oidc_bff::admin::AdminToken;
use oidc_bff::tokens::{ClientKey, ClientSecret};

use super::locate::{line_of, locate};
use super::redact::redact_message;
use super::{
    AdminConfig, Built, ConfigError, ENV_PREFIX, GatewayConfig, Origin, Problem, RawAdmin,
    RawConfig, StaticFilesConfig, validate,
};

/// Loads and validates one configuration.
pub(super) struct Loader {
    text: String,
    file: Option<PathBuf>,
    doc: toml_edit::ImDocument<String>,
    /// `OIDC_BFF__*` variables: dotted lowercase key → (name, value).
    env: BTreeMap<String, (String, String)>,
    /// Every variable given, for `admin.token_env` (dropped with the loader).
    all_env: BTreeMap<String, String>,
    problems: Vec<Problem>,
}

impl Loader {
    pub(super) fn new<I, K, V>(
        text: String,
        file: Option<PathBuf>,
        env: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let doc = toml_edit::ImDocument::parse(text.clone()).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            ConfigError {
                problems: vec![Problem {
                    key: None,
                    origin: match (&file, line) {
                        (Some(path), Some(line)) => Some(Origin::File {
                            path: path.clone(),
                            line,
                        }),
                        _ => None,
                    },
                    message: format!("invalid TOML: {}", e.message()),
                }],
            }
        })?;
        let all_env: BTreeMap<String, String> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let env = all_env
            .iter()
            .filter_map(|(name, v)| {
                let name = name.clone();
                let rest = name.strip_prefix(ENV_PREFIX)?;
                if rest.is_empty() || rest.split("__").any(str::is_empty) {
                    return None;
                }
                let key = rest
                    .split("__")
                    .collect::<Vec<_>>()
                    .join(".")
                    .to_ascii_lowercase();
                Some((key, (name, v.clone())))
            })
            .collect();
        Ok(Self {
            text,
            file,
            doc,
            env,
            all_env,
            problems: Vec::new(),
        })
    }

    fn figment(&mut self) -> Figment {
        let base = match &self.file {
            Some(path) => Figment::from(Toml::file_exact(path)),
            None => Figment::from(Toml::string(&self.text)),
        };
        // Overrides of `[[api]]` and `[[frontend]]` entries are applied
        // index by index to the file's lists; all other keys nest normally.
        let mut dict = Dict::new();
        let mut lists: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        for list in LISTS {
            if let Ok(Value::Array(_, items)) = base.find_value(list) {
                lists.insert(list, items);
            }
        }
        // Numeric parts in numeric order, so `api.2` is added before `api.10`.
        let mut overrides: Vec<_> = self.env.iter().collect();
        overrides.sort_by_key(|(key, _)| {
            key.split('.')
                .map(|p| {
                    p.parse::<usize>()
                        .map_or_else(|_| p.to_owned(), |n| format!("{n:020}"))
                })
                .collect::<Vec<_>>()
        });
        let mut touched = Vec::new();
        for (key, (name, raw)) in overrides {
            let value = env_value(raw);
            let parts: Vec<&str> = key.split('.').collect();
            if let [list, index, rest @ ..] = parts.as_slice()
                && let Some(list) = LISTS.iter().copied().find(|l| l == list)
            {
                let items = lists.entry(list).or_default();
                if !touched.contains(&list) {
                    touched.push(list);
                }
                if let Err(message) = insert_indexed(items, list, index, rest, value) {
                    self.problems.push(Problem {
                        key: Some(key.clone()),
                        origin: Some(Origin::Env(name.clone())),
                        message,
                    });
                }
                continue;
            }
            insert_path(&mut dict, &parts, value);
        }
        for list in touched {
            if let Some(items) = lists.remove(list) {
                dict.insert(list.into(), Value::from(items));
            }
        }
        base.merge(EnvOverrides { dict })
    }

    pub(super) fn load(mut self) -> Result<GatewayConfig, ConfigError> {
        let figment = self.figment();
        let raw: Option<RawConfig> = match figment.extract_lossy::<RawConfig>() {
            Ok(raw) => Some(raw),
            Err(err) => {
                self.figment_problems(err, &[]);
                None
            }
        };
        let oidc = self.oidc(&figment);
        let clients = self.frontend_clients(&figment);
        let (raw, (oidc, digest), clients) = match (raw, oidc, clients) {
            (Some(raw), Some(oidc), Some(clients)) if self.problems.is_empty() => {
                (raw, oidc, clients)
            }
            _ => return Err(self.into_error()),
        };
        let mut oidc_digests = vec![digest];
        oidc_digests.extend(clients.iter().map(|(_, d)| *d));
        let frontends = raw
            .frontend
            .into_iter()
            .zip(clients)
            .map(|(f, (oidc, _))| f.into_config(oidc))
            .collect();
        let (admin, admin_token) = self.admin(raw.admin);
        let static_files = raw.static_files.map(|s| StaticFilesConfig {
            dir: s.dir.relative(),
            spa_fallback: s.spa_fallback,
        });
        let from_env = self
            .env
            .iter()
            .map(|(k, (name, _))| (k.clone(), name.clone()))
            .collect();
        let config = GatewayConfig {
            listen: raw.listen,
            public_url: raw.public_url,
            oidc,
            session: raw.session,
            csrf: raw.csrf,
            server: raw.server,
            static_files,
            log: raw.log,
            metrics: raw.metrics,
            api: raw.api,
            admin,
            frontends,
            source: None,
            from_env,
            built: Built::default(),
        };
        match validate::validate(&config) {
            Ok(_) if !self.problems.is_empty() => Err(self.into_error()),
            Ok(built) => Ok(GatewayConfig {
                built: Built {
                    admin_token,
                    oidc_digests,
                    ..built
                },
                ..config
            }),
            Err(found) => {
                for (key, message) in found {
                    self.problem(&key, message);
                }
                Err(self.into_error())
            }
        }
    }

    /// Reads `[oidc]` into [`OidcConfig`], taking the client secret from
    /// `client_secret_file` when given; with the digest of its settings.
    fn oidc(&mut self, figment: &Figment) -> Option<(OidcConfig, u64)> {
        let dict = match figment.find_value("oidc") {
            Ok(Value::Dict(_, dict)) => dict,
            // RawConfig reports a missing or mistyped section.
            _ => return None,
        };
        let files = match figment.extract_inner_lossy::<ClientFiles>("oidc") {
            Ok(files) => files,
            Err(err) => {
                self.figment_problems(err, &[]);
                return None;
            }
        };
        self.client("oidc", dict, files)
    }

    /// Reads each `[frontend.oidc]` like [`oidc`](Self::oidc).
    fn frontend_clients(&mut self, figment: &Figment) -> Option<Vec<(OidcConfig, u64)>> {
        let items = match figment.find_value("frontend") {
            Ok(Value::Array(_, items)) => items,
            // None, or mistyped: RawConfig reports it.
            _ => return Some(Vec::new()),
        };
        let files = match figment.extract_inner_lossy::<Vec<FrontendFiles>>("frontend") {
            Ok(files) => files,
            Err(err) => {
                self.figment_problems(err, &[]);
                return None;
            }
        };
        let mut clients = Vec::with_capacity(items.len());
        for (i, (item, files)) in items.into_iter().zip(files).enumerate() {
            let dict = match item {
                Value::Dict(_, mut entry) => match entry.remove("oidc") {
                    Some(Value::Dict(_, dict)) => dict,
                    _ => return None,
                },
                _ => return None,
            };
            clients.push(self.client(&format!("frontend.{i}.oidc"), dict, files.oidc)?);
        }
        Some(clients)
    }

    /// Reads one client's table (`key` is its dotted key) into
    /// [`OidcConfig`], with the digest of its settings.
    fn client(
        &mut self,
        key: &str,
        mut dict: Dict,
        files: ClientFiles,
    ) -> Option<(OidcConfig, u64)> {
        let mut digest = std::hash::DefaultHasher::new();
        serde_json::to_string(&dict)
            .unwrap_or_default()
            .hash(&mut digest);
        dict.remove("client_secret_file");
        // The private key of `private_key_jwt`: a path, relative to the
        // file's directory, read below with a key-precise error.
        dict.remove("client_key");
        let secret_file = files.client_secret_file.map(|p| p.relative());
        let key_file = files.client_key.map(|p| p.relative());
        let prefix: Vec<&str> = key.split('.').collect();
        let mut oidc = match Figment::from(Serialized::defaults(dict)).extract_lossy::<OidcConfig>()
        {
            Ok(oidc) => oidc,
            Err(err) => {
                self.figment_problems(err, &prefix);
                return None;
            }
        };
        if let Some(path) = secret_file {
            if oidc.client_secret.is_some() {
                self.problem(
                    &format!("{key}.client_secret_file"),
                    "give either `client_secret` or `client_secret_file`, not both",
                );
                return None;
            }
            match std::fs::read_to_string(&path) {
                Ok(secret) => {
                    let secret = secret.trim_end_matches(['\r', '\n']);
                    if secret.is_empty() {
                        self.problem(
                            &format!("{key}.client_secret_file"),
                            format!("{} is empty", path.display()),
                        );
                        return None;
                    }
                    secret.hash(&mut digest);
                    oidc.client_secret = Some(ClientSecret::new(secret));
                }
                Err(e) => {
                    self.problem(
                        &format!("{key}.client_secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        if let Some(path) = key_file {
            std::fs::read(&path).unwrap_or_default().hash(&mut digest);
            // The message names the file and what is wrong, never the key.
            match ClientKey::from_pem_file(&path) {
                Ok(client_key) => oidc.client_key = Some(client_key),
                Err(err) => {
                    let message = err.to_string();
                    let message = message
                        .strip_prefix("configuration error: ")
                        .unwrap_or(&message);
                    self.problem(&format!("{key}.client_key"), message);
                    return None;
                }
            }
        }
        Some((oidc, digest.finish()))
    }

    /// Reads `[admin]`: the admin API's token from `token_file` or from the
    /// variable `token_env` names. Problems never show the token.
    fn admin(&mut self, raw: RawAdmin) -> (AdminConfig, Option<AdminToken>) {
        let config = AdminConfig {
            token_file: raw.token_file.map(|p| p.relative()),
            token_env: raw.token_env,
        };
        let token = match (&config.token_file, &config.token_env) {
            (None, None) => return (config, None),
            (Some(_), Some(_)) => {
                self.problem(
                    "admin.token_env",
                    "give either `token_file` or `token_env`, not both",
                );
                return (config, None);
            }
            (Some(path), None) => match std::fs::read_to_string(path) {
                Ok(text) => AdminToken::new(text).map_err(|e| {
                    (
                        "admin.token_file",
                        format!("{}: {}", path.display(), reason(&e)),
                    )
                }),
                Err(e) => Err((
                    "admin.token_file",
                    format!("cannot read {}: {e}", path.display()),
                )),
            },
            (None, Some(name)) => match self.all_env.get(name) {
                _ if name.is_empty() => Err((
                    "admin.token_env",
                    "must name an environment variable".to_owned(),
                )),
                Some(value) => AdminToken::new(value.clone()).map_err(|e| {
                    (
                        "admin.token_env",
                        format!("environment variable {name}: {}", reason(&e)),
                    )
                }),
                None => Err((
                    "admin.token_env",
                    format!("the environment variable {name} is not set"),
                )),
            },
        };
        match token {
            Ok(token) => (config, Some(token)),
            Err((key, message)) => {
                self.problem(key, message);
                (config, None)
            }
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path: Vec<&str> = key.split('.').collect();
        let origin = self.origin(&path);
        self.problems.push(Problem {
            key: Some(key.to_owned()),
            origin,
            message: message.into(),
        });
    }

    /// Turns figment's errors into problems; `prefix` is the path of the
    /// value the failing extraction started at.
    fn figment_problems(&mut self, err: figment::Error, prefix: &[&str]) {
        for err in err {
            let mut path: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
            path.extend(err.path.iter().cloned());
            let (message, leaf) = match &err.kind {
                figment::error::Kind::UnknownField(field, expected) => (
                    if expected.is_empty() {
                        "unknown key".to_owned()
                    } else {
                        format!("unknown key; expected one of: {}", expected.join(", "))
                    },
                    Some(field.clone()),
                ),
                figment::error::Kind::MissingField(field) => {
                    ("missing required key".to_owned(), Some(field.to_string()))
                }
                kind => (kind.to_string(), None),
            };
            if let Some(leaf) = leaf
                && path.last() != Some(&leaf)
            {
                path.push(leaf);
            }
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let origin = self.origin(&parts);
            self.problems.push(Problem {
                key: (!path.is_empty()).then(|| path.join(".")),
                origin,
                message: redact_message(&message, &parts),
            });
        }
    }

    /// The environment variable that set `path`, else the line of the file
    /// holding it (or its closest enclosing table).
    fn origin(&self, path: &[&str]) -> Option<Origin> {
        let key = path.join(".");
        if let Some((name, _)) = self.env.get(&key) {
            return Some(Origin::Env(name.clone()));
        }
        let file = self
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from("<config>"));
        let offset = locate(&self.doc, path)?;
        Some(Origin::File {
            path: file,
            line: line_of(&self.text, offset),
        })
    }

    fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.problems,
        }
    }
}

/// Parses an environment value like figment's `Env` does, but keeps
/// scalars as strings: lossy extraction turns them into numbers or booleans
/// only where one is expected, so a numeric secret stays a string.
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let Ok(value) = trimmed.parse::<Value>();
        if matches!(value, Value::Array(..) | Value::Dict(..)) {
            return value;
        }
    }
    Value::from(raw.to_owned())
}

/// The file names of a client's table, read where the file's directory is
/// known (relative paths are relative to it).
#[derive(Default, serde::Deserialize)]
struct ClientFiles {
    #[serde(default)]
    client_secret_file: Option<RelativePathBuf>,
    #[serde(default)]
    client_key: Option<RelativePathBuf>,
}

/// The file names of one `[[frontend]]` entry's client.
#[derive(Default, serde::Deserialize)]
struct FrontendFiles {
    #[serde(default)]
    oidc: ClientFiles,
}

/// The lists of tables whose entries environment variables address by index.
const LISTS: [&str; 2] = ["api", "frontend"];

/// Sets `rest` in entry `index` of `items` (the list `list`); index
/// `items.len()` adds an entry.
fn insert_indexed(
    items: &mut Vec<Value>,
    list: &str,
    index: &str,
    rest: &[&str],
    value: Value,
) -> Result<(), String> {
    let Ok(i) = index.parse::<usize>() else {
        return Err(format!(
            "entries of `{list}` are addressed by index, e.g. OIDC_BFF__{}__0__{}",
            list.to_ascii_uppercase(),
            if list == "api" { "UPSTREAM" } else { "HOST" }
        ));
    };
    if i > items.len() {
        return Err(format!(
            "only indexes 0 to {} of `{list}` exist; a new entry must use index {}",
            items.len().saturating_sub(1),
            items.len()
        ));
    }
    if i == items.len() {
        items.push(Value::from(Dict::new()));
    }
    if rest.is_empty() {
        items[i] = value;
        return Ok(());
    }
    let Value::Dict(_, entry) = &mut items[i] else {
        return Ok(());
    };
    // `frontend.N.api.M.key`: a list inside an entry.
    if let [inner, index, tail @ ..] = rest
        && *inner == "api"
        && index.parse::<usize>().is_ok()
    {
        let mut inner_items = match entry.remove("api") {
            Some(Value::Array(_, items)) => items,
            _ => Vec::new(),
        };
        let result = insert_indexed(&mut inner_items, "api", index, tail, value);
        entry.insert("api".into(), Value::from(inner_items));
        return result;
    }
    insert_path(entry, rest, value);
    Ok(())
}

fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// The environment overrides as a figment provider.
struct EnvOverrides {
    dict: Dict,
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// An [`AdminToken`] refusal without the crate's prefix.
fn reason(err: &oidc_bff::BffError) -> String {
    match err {
        oidc_bff::BffError::Config(why) => why.clone(),
        other => other.to_string(),
    }
}

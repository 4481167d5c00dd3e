//! Editing the config file the way an administrator would by hand: only the
//! changed line differs, every comment, blank line and the order of the rest
//! stay as they were.
//!
//! A change is first made as a small text patch (replace a value, delete a
//! line, or insert a line below the key's commented default, as the shipped
//! file has them). The patched text is parsed again and must mean exactly the
//! old document with that one key changed; if it does not (an unusual layout
//! such as an inline table), the change is made with `toml_edit` on the
//! parsed document instead. Then the whole new text is validated with
//! [`Config::parse`] before anything is written, and written atomically.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::CliError;
use super::file::{self, Access};
use crate::config::{Config, ConfigError};

/// What a key of the config holds, as the schema's defaults show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Bool,
    /// A list of strings.
    List,
    /// A table of names to strings (`jupyter.env`).
    Map,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Integer => "a whole number",
            Kind::Bool => "true or false",
            Kind::List => "a list of strings",
            Kind::Map => "a table of NAME = \"value\" pairs",
        }
    }
}

/// A key named on the command line, checked against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A whole section, e.g. `server`.
    Section(String),
    /// A setting, e.g. `server.listen`.
    Setting { path: Vec<String>, kind: Kind },
}

impl Key {
    /// The dotted name as the user wrote it.
    pub fn dotted(&self) -> String {
        match self {
            Key::Section(s) => s.clone(),
            Key::Setting { path, .. } => path.join("."),
        }
    }
}

/// Every key of the config and its kind, derived from the serialized
/// defaults so it cannot drift from [`Config`].
pub struct Schema {
    keys: BTreeMap<String, Kind>,
}

impl Schema {
    pub fn new() -> Result<Schema, CliError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| CliError::Failed(format!("cannot describe the config schema: {e}")))?;
        let mut keys = BTreeMap::new();
        if let toml::Value::Table(sections) = defaults {
            for (section, value) in sections {
                let toml::Value::Table(settings) = value else {
                    continue;
                };
                for (name, value) in settings {
                    let kind = match value {
                        toml::Value::Integer(_) => Kind::Integer,
                        toml::Value::Boolean(_) => Kind::Bool,
                        toml::Value::Array(_) => Kind::List,
                        toml::Value::Table(_) => Kind::Map,
                        _ => Kind::Text,
                    };
                    keys.insert(format!("{section}.{name}"), kind);
                }
            }
        }
        // Unset by default, so absent from the serialized defaults.
        keys.insert("auth.password_hash".into(), Kind::Text);
        Ok(Schema { keys })
    }

    pub fn sections(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = self
            .keys
            .keys()
            .filter_map(|k| k.split_once('.').map(|(s, _)| s))
            .collect();
        seen.dedup();
        seen.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = (&str, Kind)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Looks `dotted` up; an unknown key is a usage error naming the closest known one.
    pub fn resolve(&self, dotted: &str) -> Result<Key, CliError> {
        let dotted = dotted.trim();
        if self.sections().any(|s| s == dotted) {
            return Ok(Key::Section(dotted.to_string()));
        }
        if let Some(kind) = self.keys.get(dotted) {
            return Ok(Key::Setting {
                path: dotted.split('.').map(str::to_string).collect(),
                kind: *kind,
            });
        }
        for (map, kind) in &self.keys {
            if *kind != Kind::Map {
                continue;
            }
            if let Some(name) = dotted
                .strip_prefix(map.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                if name.is_empty() {
                    break;
                }
                let mut path: Vec<String> = map.split('.').map(str::to_string).collect();
                path.push(name.to_string());
                return Ok(Key::Setting {
                    path,
                    kind: Kind::Text,
                });
            }
        }
        let best = crate::config::closest(dotted, self.keys.keys().map(String::as_str));
        let hint = match best {
            Some(k) => format!("did you mean `{k}`? "),
            None => String::new(),
        };
        Err(CliError::Usage(format!(
            "unknown config key `{dotted}`; {hint}(`nbctl config show` lists every key)"
        )))
    }
}

/// The TOML value for `key` from command-line words, typed by the schema.
pub fn value_from_args(key: &Key, words: &[String]) -> Result<Value, CliError> {
    let Key::Setting { kind, .. } = key else {
        return Err(CliError::Usage(format!(
            "`{}` is a section; set one of its keys, e.g. `{}.KEY VALUE`",
            key.dotted(),
            key.dotted()
        )));
    };
    let name = key.dotted();
    let one = || -> Result<&String, CliError> {
        match words {
            [word] => Ok(word),
            _ => Err(CliError::Usage(format!(
                "`{name}` takes one value ({}), got {}",
                kind.describe(),
                words.len()
            ))),
        }
    };
    let wrong = |got: &str, example: &str| {
        CliError::Usage(format!(
            "`{name}` takes {}, e.g. {example}; got {got:?}",
            kind.describe()
        ))
    };
    match kind {
        Kind::Text => Ok(Value::from(one()?.as_str())),
        Kind::Integer => {
            let word = one()?;
            word.trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| wrong(word, "1024"))
        }
        Kind::Bool => match one()?.trim() {
            "true" => Ok(Value::from(true)),
            "false" => Ok(Value::from(false)),
            other => Err(wrong(other, "true")),
        },
        Kind::List => {
            // One word may be a whole TOML list; `[::1]:9999` is an element.
            if let [word] = words {
                if let Ok(Value::Array(a)) = word.parse::<Value>() {
                    if a.iter().all(|v| v.is_str()) {
                        return Ok(Value::Array(a));
                    }
                    return Err(wrong(word, "'[\"a\", \"b\"]' or several values"));
                }
            }
            Ok(Value::Array(words.iter().map(String::as_str).collect()))
        }
        Kind::Map => {
            let word = one()?;
            match word.parse::<Value>() {
                Ok(Value::InlineTable(t)) if t.iter().all(|(_, v)| v.is_str()) => {
                    Ok(Value::InlineTable(t))
                }
                _ => Err(wrong(word, "'{ MPLBACKEND = \"Agg\" }'")),
            }
        }
    }
}

/// The config file as read, to be edited and written back.
pub struct ConfigFile {
    pub path: PathBuf,
    text: String,
}

impl ConfigFile {
    pub fn open(path: &Path) -> Result<ConfigFile, CliError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            CliError::Failed(
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
                .to_string(),
            )
        })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            text,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of a key as written in the file (not its default), from a
    /// fully parsed (owned) document so that it keeps its formatting.
    pub fn written_value(&self, path: &[String]) -> Result<Option<Value>, CliError> {
        let doc: toml_edit::DocumentMut = self
            .text
            .parse()
            .map_err(|e: toml_edit::TomlError| self.syntax_error(e.span(), e.message()))?;
        let mut item = doc.as_item();
        for part in path {
            match item.as_table_like().and_then(|t| t.get(part)) {
                Some(next) => item = next,
                None => return Ok(None),
            }
        }
        Ok(item.as_value().cloned())
    }

    /// The text with the setting at `path` set to `value`, or removed when
    /// `value` is `None`. `None` back when there is nothing to remove.
    pub fn edited(
        &self,
        path: &[String],
        value: Option<&Value>,
    ) -> Result<Option<String>, CliError> {
        let before: toml::Table =
            toml::from_str(&self.text).map_err(|e| self.syntax_error(e.span(), e.message()))?;
        // A map entry whose map is not written yet: write the map inline.
        if let (Some(v), [section, map, name]) = (value, path) {
            let written = toml_get(&before, &path[..2]).is_some();
            if !written {
                let mut table = toml_edit::InlineTable::new();
                table.insert(name, v.clone());
                table.fmt();
                return self.edited(
                    &[section.clone(), map.clone()],
                    Some(&Value::InlineTable(table)),
                );
            }
        }
        let value = value.map(|v| v.clone().decorated("", ""));
        let mut expected = before.clone();
        let changed = toml_apply(&mut expected, path, value.as_ref());
        if !changed {
            return Ok(None);
        }
        let matches =
            |text: &str| toml::from_str::<toml::Table>(text).ok().as_ref() == Some(&expected);
        if let Some(text) = patch_text(&self.text, path, value.as_ref()) {
            if matches(&text) {
                return Ok(Some(text));
            }
        }
        let text = edit_document(&self.text, path, value)
            .map_err(|e| CliError::Failed(format!("cannot edit {}: {e}", self.path.display())))?;
        if matches(&text) {
            Ok(Some(text))
        } else {
            Err(CliError::Failed(format!(
                "cannot edit {} safely (its layout is unusual); change `{}` by hand",
                self.path.display(),
                path.join(".")
            )))
        }
    }

    /// Validates `new_text` as the whole config, then replaces the file with
    /// it atomically, keeping its owner and mode. `edited` is the key the
    /// change was about, so that an error about it reads as bad input.
    pub fn save(&self, new_text: &str, edited: &str) -> Result<Config, CliError> {
        let path = self.path.display();
        let config = match Config::parse(&self.path, new_text) {
            Ok(c) => c,
            Err(e) => {
                if let ConfigError::Invalid { key, message, .. } = &e {
                    if key == edited || key.starts_with(&format!("{edited}.")) {
                        return Err(CliError::Usage(format!(
                            "{key}: {message}; {path} was not changed"
                        )));
                    }
                }
                let already = Config::parse(&self.path, &self.text).err();
                return Err(CliError::Failed(match already {
                    Some(old) => format!(
                        "{old}\n{path} is not valid as it is; fix that first (`nbctl config check`); nothing was changed"
                    ),
                    None => format!(
                        "this change would make the config invalid, so {path} was not changed: {e}"
                    ),
                }));
            }
        };
        let now = std::fs::read_to_string(&self.path).unwrap_or_default();
        if now != self.text {
            return Err(CliError::Failed(format!(
                "{path} changed while nbctl was editing it; nothing was written: run the command again"
            )));
        }
        file::write_atomic(
            &self.path,
            new_text.as_bytes(),
            Access::Keep { new_mode: 0o644 },
        )
        .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok(config)
    }

    /// A file that is not TOML: nothing is edited until it is fixed by hand.
    fn syntax_error(&self, span: Option<std::ops::Range<usize>>, message: &str) -> CliError {
        CliError::Failed(format!(
            "{}; fix it by hand first (`nbctl config check` shows where)",
            ConfigError::Invalid {
                path: self.path.clone(),
                location: span.map(|s| crate::config::line_col(&self.text, s.start)),
                key: String::new(),
                message: message.trim().to_string(),
            }
        ))
    }
}

fn toml_get<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        toml_get(value.as_table()?, rest)
    }
}

/// Applies the change to a plain TOML table; false when it changes nothing.
fn toml_apply(table: &mut toml::Table, path: &[String], value: Option<&Value>) -> bool {
    let Some((leaf, parents)) = path.split_last() else {
        return false;
    };
    let mut t = table;
    for p in parents {
        if value.is_none() && !t.contains_key(p) {
            return false;
        }
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(inner) => t = inner,
            _ => return false,
        }
    }
    match value {
        Some(v) => {
            let Some(plain) = plain_value(v) else {
                return false;
            };
            t.insert(leaf.clone(), plain);
            true
        }
        None => t.remove(leaf).is_some(),
    }
}

/// A `toml_edit` value as a plain `toml` value.
fn plain_value(v: &Value) -> Option<toml::Value> {
    let mut t: toml::Table = toml::from_str(&format!("v = {v}")).ok()?;
    t.remove("v")
}

/// The start of the line holding byte `at`.
fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Just past the newline ending the line that holds byte `at`.
fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

/// Where every `[table]` header starts.
fn header_starts(table: &dyn TableLike, out: &mut Vec<usize>) {
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => {
                if let Some(span) = t.span() {
                    out.push(span.start);
                }
                header_starts(t, out);
            }
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    if let Some(span) = t.span() {
                        out.push(span.start);
                    }
                    header_starts(t, out);
                }
            }
            _ => {}
        }
    }
}

fn splice(text: &str, range: Range<usize>, with: &str) -> String {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(&text[..range.start]);
    out.push_str(with);
    out.push_str(&text[range.end..]);
    out
}

/// `# name = ...` (a commented-out default, as in the shipped file).
fn is_commented_key(line: &str, key_repr: &str) -> bool {
    line.trim_start()
        .strip_prefix('#')
        .map(str::trim_start)
        .and_then(|rest| rest.strip_prefix(key_repr))
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// The change as a text patch; `None` when the layout calls for `toml_edit`.
fn patch_text(text: &str, path: &[String], value: Option<&Value>) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let (leaf, parents) = path.split_last()?;
    let mut table: &dyn TableLike = doc.as_table();
    let mut parent: Option<&Item> = None;
    for (depth, p) in parents.iter().enumerate() {
        match table.get(p) {
            Some(item) => {
                table = item.as_table_like()?;
                parent = Some(item);
            }
            None if depth == 0 && parents.len() == 1 => {
                // A section not written yet: add it at the end.
                let v = value?;
                let mut out = text.to_string();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "[{}]\n{} = {v}\n",
                    toml_edit::Key::new(p.as_str()).display_repr(),
                    toml_edit::Key::new(leaf.as_str()).display_repr()
                ));
                return Some(out);
            }
            None => return None,
        }
    }
    if let Some((key, item)) = table.get_key_value(leaf) {
        let span = item.as_value()?.span()?;
        return Some(match value {
            Some(v) => splice(text, span, &v.to_string()),
            None => {
                let start = line_start(text, key.span()?.start);
                let end = line_end(text, span.end);
                splice(text, start..end, "")
            }
        });
    }
    let v = value?;
    let parent = parent?.as_table()?;
    if parent.is_dotted() || parent.is_implicit() {
        return None;
    }
    let header = parent.span()?;
    let body_start = line_end(text, header.start);
    let mut headers = Vec::new();
    header_starts(doc.as_table(), &mut headers);
    let body_end = headers
        .into_iter()
        .filter(|&s| s > header.start)
        .min()
        .map_or(text.len(), |s| line_start(text, s));
    let key_repr = toml_edit::Key::new(leaf.as_str())
        .display_repr()
        .into_owned();
    let mut at = None;
    let mut pos = body_start;
    for line in text[body_start..body_end].split_inclusive('\n') {
        pos += line.len();
        if is_commented_key(line, &key_repr) {
            at = Some(pos);
            break;
        }
    }
    let at = at.unwrap_or_else(|| {
        parent
            .iter()
            .filter_map(|(_, item)| item.as_value()?.span())
            .map(|s| line_end(text, s.end))
            .max()
            .unwrap_or(body_start)
    });
    let mut line = String::new();
    if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&format!("{key_repr} = {v}\n"));
    Some(splice(text, at..at, &line))
}

/// The change made on the parsed document with `toml_edit`.
fn edit_document(text: &str, path: &[String], value: Option<Value>) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let (leaf, parents) = path.split_last().ok_or("empty key")?;
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    for p in parents {
        if table.get(p).is_none() {
            table.insert(p, Item::Table(toml_edit::Table::new()));
        }
        table = table
            .get_mut(p)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    match value {
        Some(mut v) => {
            if let Some(old) = table.get(leaf).and_then(Item::as_value) {
                *v.decor_mut() = old.decor().clone();
            }
            table.insert(leaf, Item::Value(v));
        }
        None => {
            table.remove(leaf);
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(k: &str) -> Vec<String> {
        k.split('.').map(str::to_string).collect()
    }

    fn edit(text: &str, key: &str, value: Option<Value>) -> Option<String> {
        let f = ConfigFile {
            path: PathBuf::from("/etc/notebook/notebook.toml"),
            text: text.to_string(),
        };
        f.edited(&path(key), value.as_ref()).unwrap()
    }

    #[test]
    fn schema_knows_every_default_and_the_password() {
        let s = Schema::new().unwrap();
        assert_eq!(
            s.resolve("server.listen").unwrap(),
            Key::Setting {
                path: path("server.listen"),
                kind: Kind::List
            }
        );
        assert!(matches!(
            s.resolve("auth.password_hash").unwrap(),
            Key::Setting {
                kind: Kind::Text,
                ..
            }
        ));
        assert!(matches!(
            s.resolve("limits.max_headers").unwrap(),
            Key::Setting {
                kind: Kind::Integer,
                ..
            }
        ));
        assert!(matches!(
            s.resolve("jupyter.env.MPLBACKEND").unwrap(),
            Key::Setting {
                kind: Kind::Text,
                ..
            }
        ));
        let err = s.resolve("server.lisen").unwrap_err().to_string();
        assert!(err.contains("did you mean `server.listen`"), "{err}");
    }

    #[test]
    fn replaces_only_the_value() {
        let text = "# top\n[server] # s\n# about listen\nlisten = \"1.2.3.4:1\" # mine\n\n[tls]\n";
        let out = edit(text, "server.listen", Some(Value::from("5.6.7.8:2"))).unwrap();
        assert_eq!(
            out,
            "# top\n[server] # s\n# about listen\nlisten = \"5.6.7.8:2\" # mine\n\n[tls]\n"
        );
    }

    #[test]
    fn inserts_below_the_commented_default_and_removes_it_again() {
        let text = "[server]\n# Where.\n#listen = \"0.0.0.0:9999\"\n\n# Prefix.\n#base_url = \"/\"\n\n[tls]\n#enabled = true\n";
        let out = edit(text, "server.base_url", Some(Value::from("/nb/"))).unwrap();
        assert_eq!(
            out,
            "[server]\n# Where.\n#listen = \"0.0.0.0:9999\"\n\n# Prefix.\n#base_url = \"/\"\nbase_url = \"/nb/\"\n\n[tls]\n#enabled = true\n"
        );
        let f = ConfigFile {
            path: PathBuf::from("x"),
            text: out,
        };
        assert_eq!(
            f.edited(&path("server.base_url"), None).unwrap().unwrap(),
            text
        );
    }

    #[test]
    fn adds_a_missing_section_and_a_key_after_the_last() {
        let out = edit(
            "[server]\nbase_url = \"/\"\n",
            "tls.enabled",
            Some(Value::from(false)),
        )
        .unwrap();
        assert_eq!(
            out,
            "[server]\nbase_url = \"/\"\n\n[tls]\nenabled = false\n"
        );
        let out = edit(
            "[server]\nbase_url = \"/\"\n[tls]\n",
            "server.shutdown_timeout",
            Some(Value::from("3s")),
        )
        .unwrap();
        assert_eq!(
            out,
            "[server]\nbase_url = \"/\"\nshutdown_timeout = \"3s\"\n[tls]\n"
        );
        let out = edit("", "auth.login_attempts", Some(Value::from(3))).unwrap();
        assert_eq!(out, "[auth]\nlogin_attempts = 3\n");
    }

    #[test]
    fn unusual_layouts_fall_back_to_toml_edit() {
        let text = "server = { base_url = \"/\", listen = \"1.2.3.4:5\" } # inline\n";
        let out = edit(text, "server.base_url", Some(Value::from("/x/"))).unwrap();
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["server"]["base_url"].as_str(), Some("/x/"));
        assert_eq!(parsed["server"]["listen"].as_str(), Some("1.2.3.4:5"));
        assert!(out.contains("# inline"), "{out}");
        let out = edit(text, "server.listen", None).unwrap();
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert!(parsed["server"].get("listen").is_none(), "{out}");
    }

    #[test]
    fn map_entries_and_removals() {
        let out = edit(
            "[jupyter]\n#env = {}\n",
            "jupyter.env.MPLBACKEND",
            Some(Value::from("Agg")),
        )
        .unwrap();
        assert_eq!(
            out,
            "[jupyter]\n#env = {}\nenv = { MPLBACKEND = \"Agg\" }\n"
        );
        let out2 = edit(&out, "jupyter.env.LANG", Some(Value::from("C.UTF-8"))).unwrap();
        let parsed: toml::Table = toml::from_str(&out2).unwrap();
        assert_eq!(parsed["jupyter"]["env"]["LANG"].as_str(), Some("C.UTF-8"));
        assert_eq!(parsed["jupyter"]["env"]["MPLBACKEND"].as_str(), Some("Agg"));
        assert_eq!(edit("[jupyter]\n", "jupyter.command", None), None);
        assert_eq!(edit("", "jupyter.env.X", None), None);
    }

    #[test]
    fn typed_values() {
        let s = Schema::new().unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k = s.resolve("limits.max_headers").unwrap();
        assert_eq!(
            value_from_args(&k, &words(&["100"])).unwrap().as_integer(),
            Some(100)
        );
        let err = value_from_args(&k, &words(&["many"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes a whole number"), "{err}");
        let k = s.resolve("tls.enabled").unwrap();
        assert!(value_from_args(&k, &words(&["yes"])).is_err());
        let k = s.resolve("server.listen").unwrap();
        let v = value_from_args(&k, &words(&["127.0.0.1:1", "[::1]:1"])).unwrap();
        assert_eq!(v.to_string(), "[\"127.0.0.1:1\", \"[::1]:1\"]");
        let v = value_from_args(&k, &words(&["[\"127.0.0.1:1\"]"])).unwrap();
        assert_eq!(v.as_array().map(|a| a.len()), Some(1));
        let k = s.resolve("jupyter.env").unwrap();
        assert!(value_from_args(&k, &words(&["{ A = \"b\" }"])).is_ok());
        assert!(value_from_args(&k, &words(&["A=b"])).is_err());
    }
}

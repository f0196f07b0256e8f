//! How runs' configs differ: `config.toml` flattened to dotted keys (`train.epochs = 30`), and
//! the keys whose values are not the same in every run of a group.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lesion_core::run::CONFIG_FILE;
use lesion_core::{Result, TrainError};

/// A flattened config: dotted key → value as shown (strings bare, other values as TOML).
pub type FlatConfig = BTreeMap<String, String>;

/// Flattens a TOML document: tables become dotted prefixes; arrays and values are leaves.
pub fn flatten_toml(text: &str) -> std::result::Result<FlatConfig, toml::de::Error> {
    let table: toml::Table = toml::from_str(text)?;
    let mut out = FlatConfig::new();
    flatten_into(&mut out, "", &table);
    Ok(out)
}

fn flatten_into(out: &mut FlatConfig, prefix: &str, table: &toml::Table) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten_into(out, &key, t),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

/// The flattened `config.toml` of the folder `dir`.
pub fn read_flat_config(dir: &Path) -> Result<FlatConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    flatten_toml(&text).map_err(|e| TrainError::file(&path, e))
}

/// The keys whose values vary among `configs` (a key missing from some counts as varying).
/// Invariant: empty for fewer than two configs.
pub fn varying_keys<'a>(configs: impl IntoIterator<Item = &'a FlatConfig>) -> BTreeSet<String> {
    let configs: Vec<&FlatConfig> = configs.into_iter().collect();
    if configs.len() < 2 {
        return BTreeSet::new();
    }
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let first = configs[0].get(*k);
            configs.iter().any(|c| c.get(*k) != first)
        })
        .cloned()
        .collect()
}

/// `a=1, b=x`: a config difference on one line.
pub fn show(diff: &BTreeMap<String, String>) -> String {
    diff.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_tables_and_finds_varying_keys() {
        let a =
            flatten_toml("[model]\narch = \"lite0\"\nsize = 64\n[train]\nlr = [1, 2]\n").unwrap();
        assert_eq!(a["model.arch"], "lite0");
        assert_eq!(a["model.size"], "64");
        assert_eq!(a["train.lr"], "[1, 2]");
        let b =
            flatten_toml("[model]\narch = \"lite0\"\nsize = 96\n[train]\nlr = [1, 2]\nx = true\n")
                .unwrap();
        let v = varying_keys([&a, &b]);
        assert_eq!(v.into_iter().collect::<Vec<_>>(), vec!["model.size", "train.x"]);
        assert!(varying_keys([&a]).is_empty());
    }
}

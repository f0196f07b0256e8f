//! Assembly recipes: several sources merged into one manifest, with readable per-source
//! rules, sample weights and named subsets, each row recording the rule that kept or
//! dropped it.
//!
//! A recipe is TOML:
//! ```toml
//! [[source]]
//! name = "archive"            # written as the rows' `source`
//! kind = "table"              # isic2016 | isic2017 | isic2018 | ph2 | folder | manifest | table | archive_json
//! path = "archive/metadata.csv"
//! images = "archive/images"   # table only: folder of `<id>.<ext>` images
//! weight = 1.0
//! id_prefix = "archive-"     # optional: keeps ids distinct from another source's
//! rules = [
//!   { name = "age15", action = "exclude", when = 'age == 15 and benign' },
//!   { name = "dx", action = "exclude", when = 'diagnosis in ["atypical melanocytic proliferation", "other"]' },
//! ]
//! [[subset]]
//! name = "semi"
//! when = 'source != "archive" or melanoma'
//! ```
//! Rules of a source are tried in order; the first whose condition holds decides (`exclude`
//! drops the row, `keep` keeps it, `keep_only` drops every row for which it does NOT hold).
//! A row no rule decides is kept by rule `default`. Kept rows get metadata `status=kept`,
//! `rule`, `weight` and `subsets`; dropped rows are listed in the summary only (and in the
//! optional full table).
//!
//! ## Condition language
//! `or`, `and`, `not`, parentheses; comparisons `==`, `!=`, `<`, `<=`, `>`, `>=`, `in [..]`,
//! `not in [..]`, `contains`; values are numbers, "strings" or [lists]. A name is a manifest
//! column (`id`, `source`, `diagnosis`, `group`, `width`, `height`), a metadata column, or
//! `class`; the bare names `melanoma`, `keratosis`, `other`, `benign`, `malignant` and
//! `has_mask` are tests. Text compares case-insensitively; numbers numerically when both sides
//! are numbers. A missing value makes every comparison false except `!=` and `not in`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{DataError, Result};
use crate::import::{import, ImportOptions, SourceKind};
use crate::labels::{keys, SourceClassTable, Stratum, SUBSET_SEPARATOR};
use crate::manifest::{Manifest, ManifestRow};

/// Rule name recorded for rows no rule decided.
pub const DEFAULT_RULE: &str = "default";
/// Status values.
pub const KEPT: &str = "kept";
pub const DROPPED: &str = "dropped";

// ---------------------------------------------------------------------------------------------
// Condition language

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Contains,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    List(Vec<Value>),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// A bare name used as a test.
    Flag(String),
    Compare {
        name: String,
        op: CmpOp,
        value: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

/// A syntax error at a character column (1-based) of the condition text.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub column: usize,
    pub problem: String,
}

fn lex(src: &str) -> std::result::Result<Vec<(Tok, usize)>, SyntaxError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |i: usize, p: String| SyntaxError { column: i + 1, problem: p };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '[' => {
                i += 1;
                Tok::LBracket
            }
            ']' => {
                i += 1;
                Tok::RBracket
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '"' | '\'' => {
                let q = c;
                i += 1;
                let mut s = String::new();
                while i < chars.len() && chars[i] != q {
                    s.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(err(start, "unterminated string".into()));
                }
                i += 1;
                Tok::Str(s)
            }
            _ if ["==", "!=", "<=", ">="].contains(&two.as_str()) => {
                i += 2;
                Tok::Op(match two.as_str() {
                    "==" => "==",
                    "!=" => "!=",
                    "<=" => "<=",
                    _ => ">=",
                })
            }
            '<' => {
                i += 1;
                Tok::Op("<")
            }
            '>' => {
                i += 1;
                Tok::Op(">")
            }
            '=' => {
                i += 1;
                Tok::Op("==")
            }
            _ if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                || c == '.' =>
            {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                Tok::Num(text.parse().map_err(|_| err(start, format!("bad number {text:?}")))?)
            }
            _ if c.is_alphanumeric() || c == '_' => {
                while i < chars.len()
                    && (chars[i].is_alphanumeric()
                        || chars[i] == '_'
                        || chars[i] == '.'
                        || chars[i] == '-')
                {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            other => return Err(err(start, format!("unexpected character {other:?}"))),
        };
        out.push((tok, start + 1));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1)
    }
    fn err<T>(&self, p: impl Into<String>) -> std::result::Result<T, SyntaxError> {
        Err(SyntaxError { column: self.col(), problem: p.into() })
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }
    fn or(&mut self) -> std::result::Result<Expr, SyntaxError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> std::result::Result<Expr, SyntaxError> {
        let mut e = self.not()?;
        while self.keyword("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> std::result::Result<Expr, SyntaxError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }
    fn atom(&mut self) -> std::result::Result<Expr, SyntaxError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected ')'");
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                let op = match self.peek() {
                    Some(Tok::Op(o)) => match *o {
                        "==" => CmpOp::Eq,
                        "!=" => CmpOp::Ne,
                        "<" => CmpOp::Lt,
                        "<=" => CmpOp::Le,
                        ">" => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    },
                    Some(Tok::Ident(k)) if k.eq_ignore_ascii_case("in") => CmpOp::In,
                    Some(Tok::Ident(k)) if k.eq_ignore_ascii_case("contains") => CmpOp::Contains,
                    Some(Tok::Ident(k))
                        if k.eq_ignore_ascii_case("not")
                            && matches!(self.toks.get(self.pos + 1), Some((Tok::Ident(i), _)) if i.eq_ignore_ascii_case("in")) =>
                    {
                        self.pos += 1;
                        CmpOp::NotIn
                    }
                    _ => return Ok(Expr::Flag(name.to_ascii_lowercase())),
                };
                self.pos += 1;
                let value = self.value()?;
                if matches!(op, CmpOp::In | CmpOp::NotIn) && !matches!(value, Value::List(_)) {
                    return self.err("`in` needs a [list]");
                }
                Ok(Expr::Compare { name: name.to_ascii_lowercase(), op, value })
            }
            Some(t) => self.err(format!("unexpected {t:?}")),
            None => self.err("unexpected end of condition"),
        }
    }
    fn value(&mut self) -> std::result::Result<Value, SyntaxError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Value::Text(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Value::Number(n))
            }
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(Value::Text(s))
            }
            Some(Tok::LBracket) => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek() == Some(&Tok::RBracket) {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value()?);
                    match self.peek() {
                        Some(Tok::Comma) => self.pos += 1,
                        Some(Tok::RBracket) => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            _ => self.err("expected a value"),
        }
    }
}

impl FromStr for Expr {
    type Err = SyntaxError;
    fn from_str(src: &str) -> std::result::Result<Expr, SyntaxError> {
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0, end: src.chars().count() + 1 };
        let e = p.or()?;
        if p.pos < p.toks.len() {
            return p.err("unexpected text after the condition");
        }
        Ok(e)
    }
}

/// The value of a name for a row (`None` when missing).
fn lookup(row: &ManifestRow, name: &str) -> Option<String> {
    match name {
        "id" => Some(row.id.clone()),
        "source" => Some(row.source.clone()),
        "diagnosis" => row.diagnosis.clone(),
        "group" => row.group.clone(),
        "width" => Some(row.width.to_string()),
        "height" => Some(row.height.to_string()),
        "class" => Some(Stratum::of_row(row).as_str().to_string()),
        other => row.meta_value(other).map(str::to_owned),
    }
}

fn is_benign(row: &ManifestRow) -> bool {
    match row.meta_value(keys::BENIGN_MALIGNANT) {
        Some(b) => b.eq_ignore_ascii_case("benign"),
        None => Stratum::of_row(row) != Stratum::Melanoma,
    }
}

fn equal(a: &str, v: &Value) -> bool {
    match v {
        Value::Number(n) => a.trim().parse::<f64>().is_ok_and(|x| (x - n).abs() < 1e-9),
        Value::Text(t) => a.trim().eq_ignore_ascii_case(t.trim()),
        Value::List(_) => false,
    }
}

fn order(a: &str, v: &Value) -> Option<std::cmp::Ordering> {
    match v {
        Value::Number(n) => a.trim().parse::<f64>().ok().and_then(|x| x.partial_cmp(n)),
        Value::Text(t) => Some(a.to_ascii_lowercase().cmp(&t.to_ascii_lowercase())),
        Value::List(_) => None,
    }
}

impl Expr {
    /// Evaluates the condition for a row.
    pub fn eval(&self, row: &ManifestRow) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(row) || b.eval(row),
            Expr::And(a, b) => a.eval(row) && b.eval(row),
            Expr::Not(a) => !a.eval(row),
            Expr::Flag(f) => match f.as_str() {
                "melanoma" => Stratum::of_row(row) == Stratum::Melanoma,
                "keratosis" => Stratum::of_row(row) == Stratum::Keratosis,
                "other" => Stratum::of_row(row) == Stratum::Other,
                "benign" => is_benign(row),
                "malignant" => !is_benign(row),
                "has_mask" => row.mask_path.is_some(),
                other => lookup(row, other)
                    .is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")),
            },
            Expr::Compare { name, op, value } => {
                let Some(a) = lookup(row, name) else {
                    return matches!(op, CmpOp::Ne | CmpOp::NotIn);
                };
                let list = |v: &Value| match v {
                    Value::List(items) => items.iter().any(|i| equal(&a, i)),
                    _ => false,
                };
                match op {
                    CmpOp::Eq => equal(&a, value),
                    CmpOp::Ne => !equal(&a, value),
                    CmpOp::Lt => order(&a, value) == Some(std::cmp::Ordering::Less),
                    CmpOp::Le => order(&a, value).is_some_and(|o| o != std::cmp::Ordering::Greater),
                    CmpOp::Gt => order(&a, value) == Some(std::cmp::Ordering::Greater),
                    CmpOp::Ge => order(&a, value).is_some_and(|o| o != std::cmp::Ordering::Less),
                    CmpOp::In => list(value),
                    CmpOp::NotIn => !list(value),
                    CmpOp::Contains => match value {
                        Value::Text(t) => a.to_ascii_lowercase().contains(&t.to_ascii_lowercase()),
                        Value::Number(n) => a.contains(&n.to_string()),
                        Value::List(_) => false,
                    },
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes

/// What a rule does when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Exclude,
    Keep,
    /// Drops the rows for which the condition does NOT hold.
    KeepOnly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    action: RuleAction,
    when: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSpec {
    name: String,
    kind: String,
    path: PathBuf,
    images: Option<PathBuf>,
    weight: Option<f64>,
    id_prefix: Option<String>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubsetSpec {
    name: String,
    when: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    source: Vec<SourceSpec>,
    #[serde(default)]
    subset: Vec<SubsetSpec>,
}

/// A parsed rule. Invariant: `name` is non-empty.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: RuleAction,
    pub when: Expr,
}

/// A parsed source.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: String,
    /// Resolved against the recipe's folder.
    pub path: PathBuf,
    pub images: Option<PathBuf>,
    pub weight: f64,
    /// Prepended to every id of the source: the same image shipped by two sources under one
    /// id (the ISIC Archive and a challenge set) then gets two rows that duplicate detection
    /// groups, instead of an id clash.
    pub id_prefix: Option<String>,
    pub rules: Vec<Rule>,
}

/// A named subset.
#[derive(Debug, Clone)]
pub struct Subset {
    pub name: String,
    pub when: Expr,
}

/// A parsed recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub sources: Vec<Source>,
    pub subsets: Vec<Subset>,
}

/// Default sample weight.
const DEFAULT_WEIGHT: f64 = 1.0;

fn recipe_err(path: &Path, problem: String) -> DataError {
    DataError::Layout { path: path.to_path_buf(), problem: format!("recipe: {problem}") }
}

impl Recipe {
    /// Reads and checks a recipe file; condition syntax errors name the rule and column.
    pub fn read(path: &Path) -> Result<Recipe> {
        let bytes = crate::io::read_bytes(path)?;
        let text =
            String::from_utf8(bytes).map_err(|e| recipe_err(path, format!("not UTF-8: {e}")))?;
        Recipe::parse(path, &text)
    }

    /// Parses recipe text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Recipe> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| recipe_err(path, e.to_string()))?;
        let dir = crate::io::parent_dir(path);
        let cond = |what: &str, src: &str| -> Result<Expr> {
            src.parse::<Expr>().map_err(|e| {
                recipe_err(path, format!("{what}: column {}: {} in {src:?}", e.column, e.problem))
            })
        };
        let mut sources = Vec::new();
        for s in file.source {
            let mut rules = Vec::new();
            for r in s.rules {
                if r.name.is_empty() {
                    return Err(recipe_err(
                        path,
                        format!("source {:?}: a rule has an empty name", s.name),
                    ));
                }
                rules.push(Rule {
                    when: cond(&format!("source {:?}, rule {:?}", s.name, r.name), &r.when)?,
                    name: r.name,
                    action: r.action,
                });
            }
            let resolve = |p: &Path| {
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                }
            };
            sources.push(Source {
                path: resolve(&s.path),
                images: s.images.as_deref().map(resolve),
                weight: s.weight.unwrap_or(DEFAULT_WEIGHT),
                id_prefix: s.id_prefix.filter(|p| !p.is_empty()),
                name: s.name,
                kind: s.kind,
                rules,
            });
        }
        let subsets = file
            .subset
            .into_iter()
            .map(|s| {
                Ok(Subset { when: cond(&format!("subset {:?}", s.name), &s.when)?, name: s.name })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Recipe { sources, subsets })
    }
}

/// Counts of one (source, rule, status) cell of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Indexed like [`Stratum::ALL`].
    pub by_class: [usize; 3],
}

/// What an assembly produced.
#[derive(Debug, Clone)]
pub struct Assembly {
    /// Kept rows (status, rule, weight, subsets in their metadata).
    pub kept: Manifest,
    /// Dropped rows (status and rule in their metadata).
    pub dropped: Vec<ManifestRow>,
    /// (source, rule, status) -> counts.
    pub by_rule: BTreeMap<(String, String, String), RuleCounts>,
}

impl Assembly {
    /// Per source × class table of the kept rows.
    pub fn kept_table(&self) -> SourceClassTable {
        SourceClassTable::of_rows(&self.kept.rows)
    }
}

impl fmt::Display for Assembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kept\n{}", self.kept_table())?;
        writeln!(
            f,
            "{:<16} {:<24} {:<8} {:>9} {:>9} {:>9}",
            "source", "rule", "status", "melanoma", "keratosis", "other"
        )?;
        for ((s, r, st), c) in &self.by_rule {
            writeln!(
                f,
                "{:<16} {:<24} {:<8} {:>9} {:>9} {:>9}",
                s, r, st, c.by_class[0], c.by_class[1], c.by_class[2]
            )?;
        }
        Ok(())
    }
}

/// Loads one source's rows (any importer, an existing manifest, or a metadata table).
pub fn load_source(s: &Source) -> Result<Vec<ManifestRow>> {
    let rows = match s.kind.as_str() {
        "manifest" => Manifest::read_csv(&s.path)?.rows,
        "archive_json" => crate::import_tables::import_archive_json(&s.path)?.rows,
        "table" | "ham10000" | "isic-cli" | "isic_archive" | "derm7pt" | "dermofit" | "atlas" => {
            let images = s.images.clone().unwrap_or_else(|| crate::io::parent_dir(&s.path));
            crate::import_tables::import_table(&s.path, &images)?.rows
        }
        other => {
            let kind = SourceKind::from_str(other)?;
            import(kind, &s.path, &ImportOptions { skip_bad: true, ..Default::default() })?
                .manifest
                .rows
        }
    };
    Ok(rows)
}

/// Applies a source's rules to a row: (kept?, deciding rule name).
pub fn decide(rules: &[Rule], row: &ManifestRow) -> (bool, String) {
    for r in rules {
        let holds = r.when.eval(row);
        match r.action {
            RuleAction::Exclude if holds => return (false, r.name.clone()),
            RuleAction::Keep if holds => return (true, r.name.clone()),
            RuleAction::KeepOnly if !holds => return (false, r.name.clone()),
            _ => {}
        }
    }
    (true, DEFAULT_RULE.to_string())
}

/// Assembles a recipe given each source's rows (in recipe order). Ids get their source's
/// `id_prefix` (none by default); an id seen in two sources is an error naming both sources.
pub fn assemble_rows(recipe: &Recipe, per_source: Vec<Vec<ManifestRow>>) -> Result<Assembly> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut by_rule: BTreeMap<(String, String, String), RuleCounts> = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (src, rows) in recipe.sources.iter().zip(per_source) {
        for mut row in rows {
            row.source = src.name.clone();
            if let Some(p) = &src.id_prefix {
                row.id = format!("{p}{}", row.id);
            }
            if let Some(first) = seen.insert(row.id.clone(), src.name.clone()) {
                return Err(DataError::DuplicateId {
                    path: src.path.clone(),
                    id: row.id.clone(),
                    first: PathBuf::from(format!("source {first}")),
                });
            }
            let (keep, rule) = decide(&src.rules, &row);
            let status = if keep { KEPT } else { DROPPED };
            let class = Stratum::of_row(&row);
            let idx = Stratum::ALL.iter().position(|c| *c == class).unwrap_or(2);
            by_rule
                .entry((src.name.clone(), rule.clone(), status.to_string()))
                .or_default()
                .by_class[idx] += 1;
            row.set_meta(keys::STATUS, status);
            row.set_meta(keys::RULE, rule);
            if row.meta_value(keys::WEIGHT).is_none() || src.weight != DEFAULT_WEIGHT {
                row.set_meta(keys::WEIGHT, src.weight.to_string());
            }
            if keep {
                let names: Vec<&str> = recipe
                    .subsets
                    .iter()
                    .filter(|s| s.when.eval(&row))
                    .map(|s| s.name.as_str())
                    .collect();
                row.set_meta(keys::SUBSETS, names.join(&SUBSET_SEPARATOR.to_string()));
                kept.push(row);
            } else {
                dropped.push(row);
            }
        }
    }
    Ok(Assembly { kept: Manifest::new(kept), dropped, by_rule })
}

/// Reads every source of `recipe` and assembles it.
pub fn assemble(recipe: &Recipe) -> Result<Assembly> {
    let per_source = recipe.sources.iter().map(load_source).collect::<Result<Vec<_>>>()?;
    assemble_rows(recipe, per_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, diagnosis: &str, age: Option<u32>) -> ManifestRow {
        let mut r = ManifestRow {
            id: id.into(),
            source: "s".into(),
            image_path: PathBuf::from(format!("{id}.jpg")),
            mask_path: None,
            width: 10,
            height: 10,
            content_hash: String::new(),
            diagnosis: Some(diagnosis.into()),
            group: None,
            meta: Default::default(),
        };
        if let Some(a) = age {
            r.set_meta(keys::AGE, a.to_string());
        }
        r
    }

    #[test]
    fn conditions_parse_and_evaluate() {
        let e: Expr = "age == 15 and benign".parse().unwrap();
        assert!(e.eval(&row("a", "nevus", Some(15))));
        assert!(!e.eval(&row("a", "melanoma", Some(15))));
        assert!(!e.eval(&row("a", "nevus", None)));
        let e: Expr =
            r#"diagnosis in ["atypical melanocytic proliferation", "Other"]"#.parse().unwrap();
        assert!(e.eval(&row("a", "other", None)));
        assert!(!e.eval(&row("a", "nevus", None)));
        let e: Expr = "not (age >= 60 or melanoma) and width > 5".parse().unwrap();
        assert!(e.eval(&row("a", "nevus", Some(30))));
        assert!(!e.eval(&row("a", "nevus", Some(70))));
        let e: Expr = "sex != 'male' and diagnosis not in [nevus]".parse().unwrap();
        assert!(e.eval(&row("a", "melanoma", None)));
        let bad = "age == ".parse::<Expr>().unwrap_err();
        assert_eq!(bad.column, 8, "{bad:?}");
        assert!("age in 3".parse::<Expr>().is_err());
        assert!("(age == 3".parse::<Expr>().is_err());
    }

    #[test]
    fn recipe_rules_and_subsets() {
        let text = r#"
[[source]]
name = "archive"
kind = "manifest"
path = "a.csv"
weight = 2.0
rules = [
  { name = "age15", action = "exclude", when = "age == 15 and benign" },
  { name = "dx", action = "exclude", when = 'diagnosis in ["other"]' },
]
[[source]]
name = "mel"
kind = "manifest"
path = "b.csv"
rules = [ { name = "only-mel", action = "keep_only", when = "melanoma" } ]
[[subset]]
name = "semi"
when = 'source != "archive" or melanoma'
"#;
        let recipe = Recipe::parse(Path::new("/r/recipe.toml"), text).unwrap();
        assert_eq!(recipe.sources[0].path, PathBuf::from("/r/a.csv"));
        let a = vec![
            row("a1", "nevus", Some(15)),
            row("a2", "melanoma", Some(15)),
            row("a3", "other", None),
            row("a4", "nevus", Some(40)),
        ];
        let b = vec![row("b1", "melanoma", None), row("b2", "nevus", None)];
        let asm = assemble_rows(&recipe, vec![a, b]).unwrap();
        let ids: Vec<&str> = asm.kept.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a2", "a4", "b1"]);
        assert_eq!(
            asm.dropped.iter().map(|r| r.meta_value(keys::RULE).unwrap()).collect::<Vec<_>>(),
            ["age15", "dx", "only-mel"]
        );
        assert_eq!(asm.kept.rows[0].meta_value(keys::SUBSETS), Some("semi"));
        assert_eq!(asm.kept.rows[1].meta_value(keys::SUBSETS), None);
        assert_eq!(asm.kept.rows[1].meta_value(keys::WEIGHT), Some("2"));
        assert_eq!(asm.kept.rows[2].meta_value(keys::RULE), Some(DEFAULT_RULE));
        assert_eq!(
            asm.by_rule[&("archive".into(), "age15".into(), DROPPED.into())].by_class,
            [0, 0, 1]
        );
        let e = Recipe::parse(Path::new("r.toml"), "[[source]]\nname='x'\nkind='ph2'\npath='p'\nrules=[{name='r',action='exclude',when='age =='}]").unwrap_err().to_string();
        assert!(e.contains("r.toml") && e.contains("rule \"r\"") && e.contains("column"), "{e}");
    }

    #[test]
    fn id_prefix_keeps_a_shared_id_apart_and_without_it_the_clash_is_an_error() {
        let text = |prefix: &str| {
            format!("[[source]]\nname='a'\nkind='manifest'\npath='a.csv'\n[[source]]\nname='b'\nkind='manifest'\npath='b.csv'\n{prefix}")
        };
        let rows = || vec![vec![row("ISIC_1", "nevus", None)], vec![row("ISIC_1", "nevus", None)]];
        let plain = Recipe::parse(Path::new("r.toml"), &text("")).unwrap();
        let e = assemble_rows(&plain, rows()).unwrap_err().to_string();
        assert!(e.contains("ISIC_1"), "{e}");
        let prefixed = Recipe::parse(Path::new("r.toml"), &text("id_prefix = 'b-'")).unwrap();
        let asm = assemble_rows(&prefixed, rows()).unwrap();
        let ids: Vec<&str> = asm.kept.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ISIC_1", "b-ISIC_1"]);
    }
}

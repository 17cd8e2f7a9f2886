//! The service catalogue (事项目录): every item a node can accept, with its guide elements
//! (办事指南), form fields, materials and route.
//!
//! Loaded from TOML. A malformed catalogue is refused as a whole with the file, the place
//! (`items[3] MZ003 .fields[2]`) and the reason, so a node never starts on half a catalogue.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The tiers of the five-level chain that own steps of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Village,
    Town,
    County,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Village => "village",
            Tier::Town => "town",
            Tier::County => "county",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "village" => Some(Tier::Village),
            "town" => Some(Tier::Town),
            "county" => Some(Tier::County),
            _ => None,
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Tier::Village => "村",
            Tier::Town => "镇",
            Tier::County => "县",
        }
    }
}

/// 即办件 or 承诺件.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Immediate,
    Promised,
}

/// What a supplement request (补正) does to the legal clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplementClock {
    Pause,
    Restart,
}

/// The form a material must be presented in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaterialForm {
    Original,
    Copy,
    Electronic,
}

impl MaterialForm {
    pub fn zh(self) -> &'static str {
        match self {
            MaterialForm::Original => "原件",
            MaterialForm::Copy => "复印件",
            MaterialForm::Electronic => "电子件",
        }
    }
}

/// The input type of a form field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Textarea,
    Number,
    Date,
    Select,
    Phone,
    IdNumber,
}

/// One step of a route, `tier:action` such as `town:review`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteStep {
    pub step: String,
    pub name: String,
    pub limit_days: u32,
}

impl RouteStep {
    /// The tier that owns this step (the part before the colon).
    pub fn tier(&self) -> Option<Tier> {
        self.step.split_once(':').and_then(|(t, _)| Tier::parse(t))
    }
}

/// The step names a route may use, in the order they may appear.
pub const STEPS: [&str; 4] = [
    "village:accept",
    "town:review",
    "county:approve",
    "village:issue",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Material {
    pub key: String,
    pub name: String,
    pub form: MaterialForm,
    pub count: u32,
    pub required: bool,
    /// 告知承诺制: the applicant may sign a written commitment instead.
    #[serde(default)]
    pub waivable: bool,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub key: String,
    pub label: String,
    pub label_en: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    pub required: bool,
    #[serde(default)]
    pub max_len: Option<usize>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
}

/// One service item (事项) with its guide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceItem {
    pub code: String,
    pub name: String,
    pub name_en: String,
    pub department: String,
    pub kind: ItemKind,
    pub statutory_days: u32,
    pub promised_days: u32,
    pub supplement_clock: SupplementClock,
    pub legal_basis: Vec<String>,
    pub eligibility: String,
    pub fee: String,
    pub result_name: String,
    pub office_hours: String,
    pub enquiry_phone: String,
    pub complaint_phone: String,
    pub route: Vec<RouteStep>,
    pub materials: Vec<Material>,
    pub fields: Vec<Field>,
}

impl ServiceItem {
    pub fn route_steps(&self) -> Vec<String> {
        self.route.iter().map(|s| s.step.clone()).collect()
    }

    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    pub fn material(&self, key: &str) -> Option<&Material> {
        self.materials.iter().find(|m| m.key == key)
    }
}

/// 一件事: items filed together with one form and one set of materials, one sub-case per
/// item, handed out once when all are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub code: String,
    pub name: String,
    pub name_en: String,
    /// The codes of its items, at least two, each once.
    pub items: Vec<String>,
    /// What the applicant should know about the bundle as a whole (shown with the form).
    #[serde(default)]
    pub guide: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    schema: u32,
    items: Vec<ServiceItem>,
    #[serde(default)]
    bundles: Vec<Bundle>,
    /// Length bounds of what a case holds; each key optional.
    #[serde(default)]
    limits: crate::bounds::Limits,
}

/// The loaded, checked catalogue.
#[derive(Debug, Clone)]
pub struct Catalog {
    items: Vec<ServiceItem>,
    bundles: Vec<Bundle>,
    limits: crate::bounds::Limits,
}

/// Why a catalogue was refused: the file, the place in it and the reason.
#[derive(Debug, Error)]
#[error("catalogue {file}: {place}: {reason}")]
pub struct CatalogError {
    pub file: PathBuf,
    pub place: String,
    pub reason: String,
}

/// The catalogue schema version this build reads.
pub const CATALOG_SCHEMA: u32 = 1;

/// Keys the applicant block already uses; a field may not take them.
const RESERVED_KEYS: [&str; 3] = ["name", "id_number", "phone"];

impl Catalog {
    /// Reads and checks a catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            file: path.to_path_buf(),
            place: "file".into(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks catalogue text; `file` is only used in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, CatalogError> {
        let err = |place: String, reason: String| CatalogError {
            file: file.to_path_buf(),
            place,
            reason,
        };
        let parsed: CatalogFile = toml::from_str(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => line_col(text, span.start),
                None => "document".to_string(),
            };
            err(place, e.message().to_string())
        })?;
        if parsed.schema != CATALOG_SCHEMA {
            return Err(err(
                "schema".into(),
                format!(
                    "schema {} is not {CATALOG_SCHEMA}, the one this build reads",
                    parsed.schema
                ),
            ));
        }
        if parsed.items.is_empty() {
            return Err(err("items".into(), "the catalogue has no items".into()));
        }
        let mut codes = HashSet::new();
        for (i, item) in parsed.items.iter().enumerate() {
            let place = format!("items[{i}] ({})", item.code);
            if !codes.insert(item.code.as_str()) {
                return Err(err(place, format!("code {} appears twice", item.code)));
            }
            check_item(item).map_err(|(sub, reason)| err(format!("{place}{sub}"), reason))?;
        }
        let mut bundle_codes = HashSet::new();
        for (i, bundle) in parsed.bundles.iter().enumerate() {
            let place = format!("bundles[{i}] ({})", bundle.code);
            if codes.contains(bundle.code.as_str()) || !bundle_codes.insert(bundle.code.as_str()) {
                return Err(err(
                    place,
                    format!("code {} is already an item's or a bundle's", bundle.code),
                ));
            }
            check_bundle(bundle, &parsed.items).map_err(|reason| err(place, reason))?;
        }
        Ok(Self {
            items: parsed.items,
            bundles: parsed.bundles,
            limits: parsed.limits,
        })
    }

    pub fn items(&self) -> &[ServiceItem] {
        &self.items
    }

    /// The length bounds of what a case holds (`[limits]`, else the defaults).
    pub fn limits(&self) -> &crate::bounds::Limits {
        &self.limits
    }

    pub fn bundles(&self) -> &[Bundle] {
        &self.bundles
    }

    pub fn bundle(&self, code: &str) -> Option<&Bundle> {
        self.bundles.iter().find(|b| b.code == code)
    }

    /// The items of `bundle`, in its order (all exist: the loader checked).
    pub fn bundle_items(&self, bundle: &Bundle) -> Vec<&ServiceItem> {
        bundle.items.iter().filter_map(|c| self.get(c)).collect()
    }

    pub fn get(&self, code: &str) -> Option<&ServiceItem> {
        self.items.iter().find(|i| i.code == code)
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

type Problem = (String, String);

fn check_item(item: &ServiceItem) -> Result<(), Problem> {
    let top = |reason: String| (String::new(), reason);
    if item.code.is_empty()
        || !item
            .code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(top("code must be ASCII letters, digits or '-'".into()));
    }
    if item.name.trim().is_empty() {
        return Err(top("name is empty".into()));
    }
    check_route(item).map_err(|r| (".route".to_string(), r))?;
    match item.kind {
        ItemKind::Immediate if item.statutory_days != 0 || item.promised_days != 0 => {
            return Err(top("an immediate item has no time limits (use 0)".into()));
        }
        ItemKind::Promised
            if item.promised_days == 0 || item.promised_days > item.statutory_days =>
        {
            return Err(top(format!(
                "promised_days {} must be at least 1 and at most statutory_days {}",
                item.promised_days, item.statutory_days
            )));
        }
        _ => {}
    }
    let step_days: u32 = item.route.iter().map(|s| s.limit_days).sum();
    if step_days > item.promised_days {
        return Err(top(format!(
            "the steps' limits add up to {step_days} working days, more than promised_days {}",
            item.promised_days
        )));
    }
    if item.materials.is_empty() {
        return Err(top("an item needs at least one material".into()));
    }
    if item.fields.is_empty() {
        return Err(top("an item needs at least one form field".into()));
    }
    let mut keys = HashSet::new();
    for (j, m) in item.materials.iter().enumerate() {
        let at = format!(".materials[{j}] ({})", m.key);
        if !is_key(&m.key) || !keys.insert(m.key.as_str()) {
            return Err((at, "key must be unique snake_case ASCII".into()));
        }
        if m.count == 0 {
            return Err((at, "count must be at least 1".into()));
        }
    }
    keys.clear();
    for (j, f) in item.fields.iter().enumerate() {
        let at = format!(".fields[{j}] ({})", f.key);
        if !is_key(&f.key) || !keys.insert(f.key.as_str()) {
            return Err((at, "key must be unique snake_case ASCII".into()));
        }
        if RESERVED_KEYS.contains(&f.key.as_str()) {
            return Err((at, "key is reserved for the applicant".into()));
        }
        if (f.field_type == FieldType::Select) == f.options.is_empty() {
            return Err((
                at,
                "options are required for select fields and only for them".into(),
            ));
        }
        if (f.min.is_some() || f.max.is_some()) && f.field_type != FieldType::Number {
            return Err((at, "min and max apply to number fields only".into()));
        }
    }
    Ok(())
}

fn check_route(item: &ServiceItem) -> Result<(), String> {
    let steps: Vec<&str> = item.route.iter().map(|s| s.step.as_str()).collect();
    // Known steps in the canonical order, each at most once.
    let mut last = None;
    for step in &steps {
        let Some(pos) = STEPS.iter().position(|s| s == step) else {
            return Err(format!("unknown step {step:?}; steps are {STEPS:?}"));
        };
        if last.is_some_and(|l| pos <= l) {
            return Err(format!("step {step:?} is out of order or repeated"));
        }
        last = Some(pos);
    }
    if steps.first() != Some(&"village:accept") || steps.last() != Some(&"village:issue") {
        return Err("a route starts with village:accept and ends with village:issue".into());
    }
    match item.kind {
        ItemKind::Immediate if steps.len() != 2 => {
            Err("an immediate item's route is village:accept, village:issue".into())
        }
        ItemKind::Promised if steps.len() < 3 => {
            Err("a promised item's route needs town:review or county:approve".into())
        }
        _ => Ok(()),
    }
}

/// A bundle names at least two existing items, each once, all accepted at the village; a field
/// key its items share has the same type and options in each, so one form input serves all.
fn check_bundle(bundle: &Bundle, items: &[ServiceItem]) -> Result<(), String> {
    if bundle.code.is_empty()
        || !bundle
            .code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err("code must be ASCII letters, digits or '-'".into());
    }
    if bundle.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    if bundle.items.len() < 2 {
        return Err("a bundle needs at least two items".into());
    }
    let mut seen = HashSet::new();
    let mut fields: Vec<&Field> = Vec::new();
    for code in &bundle.items {
        if !seen.insert(code.as_str()) {
            return Err(format!("item {code} appears twice"));
        }
        let Some(item) = items.iter().find(|i| &i.code == code) else {
            return Err(format!("item {code} is not in the catalogue"));
        };
        if item.route.first().map(|s| s.step.as_str()) != Some("village:accept") {
            return Err(format!(
                "item {code}'s route does not start at village:accept"
            ));
        }
        for f in &item.fields {
            match fields.iter().find(|g| g.key == f.key) {
                Some(g) if g.field_type != f.field_type || g.options != f.options => {
                    return Err(format!(
                        "field {} of item {code} differs in type or options from the same field of an earlier item",
                        f.key
                    ));
                }
                Some(_) => {}
                None => fields.push(f),
            }
        }
    }
    Ok(())
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 40
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DEMO: &str = include_str!("../../../config/catalog.toml");

    #[test]
    fn demo_catalogue_loads() {
        let cat = Catalog::parse(DEMO, Path::new("config/catalog.toml")).unwrap();
        assert!(cat.items().len() >= 8);
        assert!(cat.items().iter().any(|i| i.kind == ItemKind::Immediate));
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let bad = DEMO.replacen("kind = \"promised\"", "kind = promised", 1);
        let e = Catalog::parse(&bad, Path::new("cat.toml")).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("catalogue cat.toml: line "), "{text}");
    }

    #[test]
    fn semantic_error_names_item_and_reason() {
        let bad = DEMO.replacen("step = \"village:issue\"", "step = \"village:hand-out\"", 1);
        let e = Catalog::parse(&bad, Path::new("cat.toml")).unwrap_err();
        assert!(e.place.starts_with("items[0]"), "{e}");
        assert!(e.place.ends_with(".route"), "{e}");
        assert!(e.reason.contains("unknown step"), "{e}");
    }

    #[test]
    fn demo_bundles_load_with_their_items() {
        let cat = Catalog::parse(DEMO, Path::new("config/catalog.toml")).unwrap();
        let bundle = cat.bundle("YJS-LNR").unwrap();
        let codes: Vec<&str> = cat
            .bundle_items(bundle)
            .iter()
            .map(|i| i.code.as_str())
            .collect();
        assert_eq!(codes, ["LL001", "MZ003"]);
        assert!(cat.bundles().len() >= 2);
    }

    /// The demo catalogue with its first bundle's items replaced by `items`.
    fn with_bundle_items(items: &str) -> Result<Catalog, CatalogError> {
        let bad = DEMO.replacen(
            "items = [\"LL001\", \"MZ003\"]",
            &format!("items = {items}"),
            1,
        );
        assert_ne!(bad, DEMO);
        Catalog::parse(&bad, Path::new("cat.toml"))
    }

    #[test]
    fn a_bundle_with_an_unknown_item_one_item_or_a_repeat_is_refused() {
        let e = with_bundle_items(r#"["LL001", "XX999"]"#).unwrap_err();
        assert_eq!(e.place, "bundles[0] (YJS-LNR)", "{e}");
        assert!(e.reason.contains("XX999 is not in the catalogue"), "{e}");
        let e = with_bundle_items(r#"["LL001"]"#).unwrap_err();
        assert!(e.reason.contains("at least two items"), "{e}");
        let e = with_bundle_items(r#"["LL001", "LL001"]"#).unwrap_err();
        assert!(e.reason.contains("appears twice"), "{e}");
        // Items sharing fields of the same type (`address`, text in all three) bundle fine.
        let ok = with_bundle_items(r#"["LL001", "WJ001", "YB001"]"#);
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_bundle_field_with_two_types_is_refused() {
        // LL001's `hukou_type` is a select; give MZ003's text field `bank_account` that key.
        let bad = DEMO.replacen(
            "key = \"bank_account\"\nlabel = \"社会保障卡金融账号\"",
            "key = \"hukou_type\"\nlabel = \"社会保障卡金融账号\"",
            1,
        );
        assert_ne!(bad, DEMO);
        let e = Catalog::parse(&bad, Path::new("cat.toml")).unwrap_err();
        assert_eq!(e.place, "bundles[0] (YJS-LNR)", "{e}");
        assert!(e.reason.contains("field hukou_type of item MZ003"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        // Fuzz property: any damage to the file is a located error or a valid catalogue.
        #[test]
        fn damaged_catalogue_never_panics(at in 0usize..20_000, len in 0usize..40, junk in "[\\PC\n\"=\\[\\]]{0,8}") {
            let mut text = DEMO.to_string();
            let mut start = at % text.len();
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(start..end, &junk);
            if let Err(e) = Catalog::parse(&text, Path::new("cat.toml")) {
                proptest::prop_assert!(!e.place.is_empty() && !e.reason.is_empty());
            }
        }
    }
}

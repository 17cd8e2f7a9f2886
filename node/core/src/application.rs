//! An application as a clerk or a script submits it, and its validation against the item.
//!
//! Every problem is reported at once, by field (`applicant.id_number`, `form.address`,
//! `materials.id_card`), in Chinese and English. Nothing is stored unless all of it is valid.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Field, FieldType, ServiceItem};
use crate::idcard;
use crate::message::Msg;

/// The raw submission (API JSON or the web form, converted).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ApplicationInput {
    #[serde(default)]
    pub item_code: String,
    #[serde(default)]
    pub applicant: PersonInput,
    /// 帮代办: the agent who files for the applicant.
    #[serde(default)]
    pub proxy: Option<PersonInput>,
    #[serde(default)]
    pub form: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub materials: Vec<MaterialInput>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PersonInput {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub id_number: String,
    #[serde(default)]
    pub phone: String,
    /// For a proxy: relation to the applicant.
    #[serde(default)]
    pub relation: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MaterialInput {
    pub key: String,
    pub status: String,
    /// Content hash of the photo, for status `photo`.
    #[serde(default)]
    pub blob: Option<String>,
}

/// How a material was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaterialStatus {
    /// Original seen and returned.
    Original,
    Copy,
    Photo,
    /// Waived by a written commitment (告知承诺).
    Waived,
}

impl MaterialStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "original" => Some(Self::Original),
            "copy" => Some(Self::Copy),
            "photo" => Some(Self::Photo),
            "waived" => Some(Self::Waived),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Copy => "copy",
            Self::Photo => "photo",
            Self::Waived => "waived",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Self::Original => "原件已核验",
            Self::Copy => "已收复印件",
            Self::Photo => "已拍照",
            Self::Waived => "告知承诺",
        }
    }
}

/// A person as stored: validated, ID number normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub id_number: String,
    pub phone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterialRecord {
    pub key: String,
    pub status: MaterialStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// A valid application, ready to become a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub item_code: String,
    pub applicant: Person,
    pub proxy: Option<Person>,
    pub form: BTreeMap<String, String>,
    pub materials: Vec<MaterialRecord>,
}

/// Problems by field key.
pub type FieldErrors = BTreeMap<String, Msg>;

/// Checks `input` against the catalogue. `blob_exists` says whether a photo hash is stored.
pub fn validate(
    catalog: &Catalog,
    input: &ApplicationInput,
    today: NaiveDate,
    blob_exists: &dyn Fn(&str) -> bool,
) -> Result<Application, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(item) = catalog.get(input.item_code.trim()) else {
        errors.insert(
            "item_code".into(),
            Msg::new("请选择有效的办理事项", "unknown service item"),
        );
        return Err(errors);
    };
    let limits = catalog.limits();
    let applicant = person(&input.applicant, "applicant", today, limits, &mut errors);
    let proxy = input
        .proxy
        .as_ref()
        .filter(|p| {
            !(p.name.trim().is_empty()
                && p.id_number.trim().is_empty()
                && p.phone.trim().is_empty())
        })
        .map(|p| person(p, "proxy", today, limits, &mut errors));
    let form = form_values(item, &input.form, today, limits, &mut errors);
    let materials = materials(item, &input.materials, blob_exists, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Application {
        item_code: item.code.clone(),
        applicant,
        proxy,
        form,
        materials,
    })
}

fn person(
    p: &PersonInput,
    prefix: &str,
    today: NaiveDate,
    limits: &crate::bounds::Limits,
    errors: &mut FieldErrors,
) -> Person {
    let name = p.name.trim().to_string();
    if let Err(m) = check_name(&name, limits.name_chars) {
        errors.insert(format!("{prefix}.name"), m);
    }
    let id_number = match idcard::validate(&p.id_number, today) {
        Ok(id) => id,
        Err(m) => {
            errors.insert(format!("{prefix}.id_number"), m);
            String::new()
        }
    };
    let phone = p.phone.trim().to_string();
    if !is_mobile(&phone) {
        errors.insert(
            format!("{prefix}.phone"),
            Msg::new("请输入11位手机号码", "enter an 11-digit mobile number"),
        );
    }
    let relation = p
        .relation
        .as_ref()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let max = limits.relation_chars;
    if relation.as_ref().is_some_and(|r| r.chars().count() > max) {
        errors.insert(
            format!("{prefix}.relation"),
            Msg::new(
                format!("与申请人关系过长（最多{max}字）"),
                format!("the relation is longer than {max} characters"),
            ),
        );
    }
    if prefix == "proxy" && relation.is_none() {
        errors.insert(
            "proxy.relation".into(),
            Msg::new(
                "请填写代办人与申请人的关系",
                "state the agent's relation to the applicant",
            ),
        );
    }
    Person {
        name,
        id_number,
        phone,
        relation,
    }
}

fn check_name(name: &str, max: usize) -> Result<(), Msg> {
    let count = name.chars().count();
    if count == 0 {
        return Err(Msg::new("请填写姓名", "name is required"));
    }
    if count > max {
        return Err(Msg::new("姓名过长", "name is too long"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_ascii_digit() || "<>\"'&;".contains(c))
    {
        return Err(Msg::new(
            "姓名含有无效字符",
            "name contains invalid characters",
        ));
    }
    Ok(())
}

/// Mainland mobile numbers: 11 digits starting 13–19.
pub fn is_mobile(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// Landlines such as `0731-83612345` or `073183612345`.
fn is_landline(s: &str) -> bool {
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    s.starts_with('0')
        && s.matches('-').count() <= 1
        && (10..=12).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
}

fn form_values(
    item: &ServiceItem,
    raw: &BTreeMap<String, serde_json::Value>,
    today: NaiveDate,
    limits: &crate::bounds::Limits,
    errors: &mut FieldErrors,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in raw.keys() {
        if item.field(key).is_none() {
            errors.insert(
                format!("form.{key}"),
                Msg::new("该事项没有此项", "unknown field for this item"),
            );
        }
    }
    for field in &item.fields {
        let value = match raw.get(&field.key) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            Some(_) => {
                errors.insert(
                    format!("form.{}", field.key),
                    Msg::new("格式不正确", "must be text or a number"),
                );
                continue;
            }
        };
        match check_field(field, &value, today, limits) {
            Ok(Some(v)) => {
                out.insert(field.key.clone(), v);
            }
            Ok(None) => {}
            Err(m) => {
                errors.insert(format!("form.{}", field.key), m);
            }
        }
    }
    out
}

/// Checks one value; `Ok(None)` for an optional field left empty.
fn check_field(
    field: &Field,
    value: &str,
    today: NaiveDate,
    limits: &crate::bounds::Limits,
) -> Result<Option<String>, Msg> {
    if value.is_empty() {
        return if field.required {
            Err(Msg::new(
                format!("请填写{}", field.label),
                format!("{} is required", field.label_en),
            ))
        } else {
            Ok(None)
        };
    }
    let chars = value.chars().count();
    let normalised = match field.field_type {
        FieldType::Text | FieldType::Textarea => {
            let default_max = if field.field_type == FieldType::Text {
                limits.text_chars
            } else {
                limits.textarea_chars
            };
            let max = field.max_len.unwrap_or(default_max);
            if chars > max {
                return Err(Msg::new(
                    format!("不能超过{max}个字"),
                    format!("at most {max} characters"),
                ));
            }
            if value
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                return Err(Msg::new("含有无效字符", "contains control characters"));
            }
            value.to_string()
        }
        FieldType::Number => {
            let n: f64 = value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| Msg::new("请输入数字", "must be a number"))?;
            if field.min.is_some_and(|min| n < min as f64)
                || field.max.is_some_and(|max| n > max as f64)
            {
                let (min, max) = (
                    field.min.map_or("-".into(), |v| v.to_string()),
                    field.max.map_or("-".into(), |v| v.to_string()),
                );
                return Err(Msg::new(
                    format!("应在{min}到{max}之间"),
                    format!("must be between {min} and {max}"),
                ));
            }
            value.to_string()
        }
        FieldType::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map_err(|_| Msg::new("请输入有效日期（年-月-日）", "must be a date YYYY-MM-DD"))?
            .format("%Y-%m-%d")
            .to_string(),
        FieldType::Select => {
            if !field.options.iter().any(|o| o == value) {
                return Err(Msg::new(
                    "请从列表中选择",
                    "must be one of the listed options",
                ));
            }
            value.to_string()
        }
        FieldType::Phone => {
            if !is_mobile(value) && !is_landline(value) {
                return Err(Msg::new(
                    "请输入有效的电话号码",
                    "must be a mobile or landline number",
                ));
            }
            value.to_string()
        }
        FieldType::IdNumber => idcard::validate(value, today)?,
    };
    Ok(Some(normalised))
}

fn materials(
    item: &ServiceItem,
    raw: &[MaterialInput],
    blob_exists: &dyn Fn(&str) -> bool,
    errors: &mut FieldErrors,
) -> Vec<MaterialRecord> {
    let mut out: Vec<MaterialRecord> = Vec::new();
    for m in raw {
        let at = format!("materials.{}", m.key);
        let Some(def) = item.material(&m.key) else {
            errors.insert(
                at,
                Msg::new("该事项不需要此材料", "unknown material for this item"),
            );
            continue;
        };
        if m.status.trim().is_empty() {
            continue; // not provided; the required check below decides
        }
        if out.iter().any(|r| r.key == m.key) {
            errors.insert(at, Msg::new("材料重复", "material listed twice"));
            continue;
        }
        let Some(status) = MaterialStatus::parse(m.status.trim()) else {
            errors.insert(
                at,
                Msg::new(
                    "材料状态无效",
                    "status must be original, copy, photo or waived",
                ),
            );
            continue;
        };
        let blob = m
            .blob
            .as_ref()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty());
        match status {
            MaterialStatus::Photo => match &blob {
                None => {
                    errors.insert(
                        at,
                        Msg::new(
                            format!("请上传{}的照片", def.name),
                            "a photo is required for status photo",
                        ),
                    );
                    continue;
                }
                Some(hash) if !blob_exists(hash) => {
                    errors.insert(
                        at,
                        Msg::new("照片未找到，请重新上传", "photo not found; upload it again"),
                    );
                    continue;
                }
                Some(_) => {}
            },
            MaterialStatus::Waived if !def.waivable => {
                errors.insert(
                    at,
                    Msg::new(
                        format!("{}不适用告知承诺", def.name),
                        "this material cannot be waived by commitment",
                    ),
                );
                continue;
            }
            _ => {}
        }
        out.push(MaterialRecord {
            key: m.key.clone(),
            status,
            blob: if status == MaterialStatus::Photo {
                blob
            } else {
                None
            },
        });
    }
    for def in item.materials.iter().filter(|d| d.required) {
        let at = format!("materials.{}", def.key);
        if !out.iter().any(|r| r.key == def.key) && !errors.contains_key(&at) {
            errors.insert(
                at,
                Msg::new(
                    format!("缺少必需材料：{}", def.name),
                    format!("required material missing: {}", def.key),
                ),
            );
        }
    }
    out
}

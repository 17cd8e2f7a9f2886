//! The benchmark workload of BENCHMARKS.md: cases as a clerk files them, generated from a
//! seed so every run sees the same cases. Values are derived from the catalogue's own field
//! definitions, so every generated case is valid for its item.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use yiciban_core::catalog::{FieldType, ServiceItem};
use yiciban_core::idcard;

/// The item with about 12 fields and 5 materials the benchmarks file.
pub const BENCH_ITEM: &str = "MZ001";

const SURNAMES: [&str; 16] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "胡", "朱", "高",
    "欧阳",
];
const GIVEN: [&str; 16] = [
    "建国", "秀英", "桂兰", "志强", "海燕", "德明", "玉梅", "春生", "小红", "国庆", "𠈌", "淑珍",
    "红梅", "永福", "翠花", "金生",
];
const PLACES: [&str; 6] = [
    "集里街道示范村",
    "淳口镇鹤源村",
    "官渡镇竹联村",
    "沙市镇秧田村",
    "大围山镇楚东村",
    "永安镇湘丰村",
];

/// A generator of valid applications.
#[derive(Debug)]
pub struct Workload {
    rng: StdRng,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn name(&mut self) -> String {
        let s = SURNAMES[self.rng.random_range(0..SURNAMES.len())];
        let g = GIVEN[self.rng.random_range(0..GIVEN.len())];
        format!("{s}{g}")
    }

    /// A valid GB 11643 number of someone born 1930–2005 in 浏阳 (430181).
    pub fn id_number(&mut self) -> String {
        let year = self.rng.random_range(1930..2006);
        let month = self.rng.random_range(1..13);
        let day = self.rng.random_range(1..29);
        let seq = self.rng.random_range(0..1000);
        let first17 = format!("430181{year:04}{month:02}{day:02}{seq:03}");
        let check = idcard::check_char(first17.as_bytes()).map_or('0', char::from);
        format!("{first17}{check}")
    }

    pub fn mobile(&mut self) -> String {
        format!(
            "1{}{:09}",
            self.rng.random_range(3..10),
            self.rng.random_range(0..1_000_000_000u64)
        )
    }

    fn text(&mut self, max: usize) -> String {
        let place = PLACES[self.rng.random_range(0..PLACES.len())];
        let text = format!(
            "浏阳市{place}{}组{}号",
            self.rng.random_range(1..20),
            self.rng.random_range(1..200)
        );
        text.chars().take(max).collect()
    }

    /// One application for `item` as the API takes it (about 1 KB of JSON for MZ001).
    pub fn application(&mut self, item: &ServiceItem) -> Value {
        let mut form = Map::new();
        for f in &item.fields {
            let value = match f.field_type {
                FieldType::Text => Value::String(self.text(f.max_len.unwrap_or(60))),
                FieldType::Textarea => {
                    Value::String(format!("家庭主要劳动力因病无法务工，{}", self.text(40)))
                }
                FieldType::Number => {
                    let lo = f.min.unwrap_or(0);
                    let hi = f.max.unwrap_or(lo + 20_000).max(lo);
                    json!(self.rng.random_range(lo..=hi))
                }
                FieldType::Date => Value::String(format!(
                    "20{:02}-{:02}-{:02}",
                    self.rng.random_range(10..25),
                    self.rng.random_range(1..13),
                    self.rng.random_range(1..29)
                )),
                FieldType::Select => {
                    Value::String(f.options[self.rng.random_range(0..f.options.len())].clone())
                }
                FieldType::Phone => Value::String(self.mobile()),
                FieldType::IdNumber => Value::String(self.id_number()),
            };
            form.insert(f.key.clone(), value);
        }
        let materials: Vec<Value> = item
            .materials
            .iter()
            .map(|m| {
                let status = if m.waivable {
                    "waived"
                } else if self.rng.random_bool(0.5) {
                    "original"
                } else {
                    "copy"
                };
                json!({ "key": m.key, "status": status })
            })
            .collect();
        json!({
            "item_code": item.code,
            "applicant": { "name": self.name(), "id_number": self.id_number(), "phone": self.mobile() },
            "form": form,
            "materials": materials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yiciban_core::application::{ApplicationInput, validate};
    use yiciban_core::catalog::Catalog;

    #[test]
    fn every_generated_case_is_valid_for_every_item() {
        let catalog = Catalog::parse(
            yiciban_core::DEMO_CATALOG,
            std::path::Path::new("catalog.toml"),
        )
        .unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let mut w = Workload::new(7);
        for item in catalog.items() {
            for _ in 0..50 {
                let app = w.application(item);
                let input: ApplicationInput = serde_json::from_value(app.clone()).unwrap();
                if let Err(e) = validate(&catalog, &input, today, &|_| false) {
                    panic!("{} generated invalid case {app}: {e:?}", item.code);
                }
            }
        }
        let size = serde_json::to_vec(&w.application(catalog.get(BENCH_ITEM).unwrap()))
            .unwrap()
            .len();
        assert!((600..2000).contains(&size), "bench case is {size} bytes");
    }

    #[test]
    fn same_seed_same_cases() {
        let catalog = Catalog::parse(
            yiciban_core::DEMO_CATALOG,
            std::path::Path::new("catalog.toml"),
        )
        .unwrap();
        let item = catalog.get(BENCH_ITEM).unwrap();
        assert_eq!(
            Workload::new(1).application(item),
            Workload::new(1).application(item)
        );
    }
}

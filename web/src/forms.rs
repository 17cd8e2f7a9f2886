//! The new-application form: multipart fields to an [`ApplicationInput`] plus photos.
//!
//! Field names: `item_code`, `applicant.name|id_number|phone`, `proxy.name|id_number|phone|relation`,
//! `form.KEY`, `material.KEY` (status), `photo.KEY` (file), `csrf`.

use std::collections::BTreeMap;

use axum::extract::Multipart;
use yiciban_core::application::{ApplicationInput, MaterialInput, PersonInput};
use yiciban_core::message::Msg;

use crate::error::AppError;

/// Form fields that are not files, at most this many.
const MAX_FIELDS: usize = 200;
/// Bytes of one text field at most.
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// The submitted form: typed values (kept to refill the form) and photo files by material.
#[derive(Debug, Default)]
pub struct Submitted {
    pub values: BTreeMap<String, String>,
    pub photos: BTreeMap<String, Vec<u8>>,
}

impl Submitted {
    pub async fn read(mut multipart: Multipart, photo_max_bytes: usize) -> Result<Self, AppError> {
        let mut out = Submitted::default();
        let bad = |e: axum::extract::multipart::MultipartError| {
            AppError::BadRequest(Msg::new(
                "表单提交不完整，请重试",
                format!("malformed form: {e}"),
            ))
        };
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_string();
            if let Some(key) = name.strip_prefix("photo.") {
                let key = key.to_string();
                let bytes = field.bytes().await.map_err(bad)?;
                if bytes.len() > photo_max_bytes {
                    return Err(AppError::TooLarge(Msg::new(
                        format!(
                            "照片过大（{} KB），上限为 {} KB",
                            bytes.len() / 1024,
                            photo_max_bytes / 1024
                        ),
                        format!(
                            "photo too large; the limit is {} KB",
                            photo_max_bytes / 1024
                        ),
                    )));
                }
                if !bytes.is_empty() {
                    out.photos.insert(key, bytes.to_vec());
                }
            } else {
                let text = field.text().await.map_err(bad)?;
                if text.len() > MAX_TEXT_BYTES || out.values.len() >= MAX_FIELDS {
                    return Err(AppError::BadRequest(Msg::new(
                        "表单内容过长",
                        "form too large",
                    )));
                }
                out.values.insert(name, text);
            }
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> String {
        self.values.get(key).cloned().unwrap_or_default()
    }

    /// The application as core validates it; `photo_hashes` maps material key to photo hash.
    pub fn to_input(
        &self,
        item_code: &str,
        photo_hashes: &BTreeMap<String, String>,
    ) -> ApplicationInput {
        let person = |prefix: &str| PersonInput {
            name: self.get(&format!("{prefix}.name")),
            id_number: self.get(&format!("{prefix}.id_number")),
            phone: self.get(&format!("{prefix}.phone")),
            relation: self.values.get(&format!("{prefix}.relation")).cloned(),
        };
        let form = self
            .values
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("form.")
                    .map(|k| (k.to_string(), serde_json::Value::String(v.clone())))
            })
            .collect();
        let materials = self
            .values
            .iter()
            .filter_map(|(k, status)| {
                let key = k.strip_prefix("material.")?;
                Some(MaterialInput {
                    key: key.to_string(),
                    status: status.clone(),
                    blob: photo_hashes.get(key).cloned(),
                })
            })
            .collect();
        ApplicationInput {
            item_code: item_code.to_string(),
            applicant: person("applicant"),
            proxy: (self.get("proxy.enabled") == "on").then(|| person("proxy")),
            form,
            materials,
        }
    }
}

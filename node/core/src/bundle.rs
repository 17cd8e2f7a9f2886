//! 一件事一次办: a bundle (套餐) of items filed with one form and one set of materials,
//! split into one sub-case per item behind the counter (each a normal case with its own
//! receipt number, route and legal time), and handed out once, when every sub-case is done.
//!
//! There is no bundle table: every sub-case's filing carries the same
//! [`BundleRef`](crate::case_doc::BundleRef) (`{id, code, name, case_ids}`), so any sub-case
//! finds the others. A bundle's id is its first sub-case's id. All sub-cases are written in
//! one commit ([`Store::put_new_cases`](crate::store::Store::put_new_cases)), and the
//! hand-out records `issued` on every ready sub-case in one commit too.
//!
//! Also here: 即办件 settled at the counter in one visit ([`Node::settle_at_counter`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::application::{
    self, Application, ApplicationInput, FieldErrors, MaterialInput, PersonInput,
};
use crate::case_doc::{self, BundleRef, Case};
use crate::catalog::{Bundle, Catalog, Field, ItemKind, Material, ServiceItem};
use crate::event::{Event, EventKind};
use crate::fold::{CaseState, Status};
use crate::message::Msg;
use crate::node::{Actor, Filed, Node, NodeError, may_record};
use crate::store::{NewCase, SavedDoc, StoreError};
use crate::summary::CaseSummary;

/// A bundle as a clerk or a script submits it: one applicant, one form (the union of the
/// items' fields), one materials list (the union, one entry per material key).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BundleInput {
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub applicant: PersonInput,
    #[serde(default)]
    pub proxy: Option<PersonInput>,
    #[serde(default)]
    pub form: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub materials: Vec<MaterialInput>,
}

/// A bundle's sub-cases as filed or handed out, in the bundle's order.
#[derive(Debug, Clone)]
pub struct FiledBundle {
    pub bundle: BundleRef,
    pub cases: Vec<Filed>,
}

/// A bundle as this node holds it: the sub-cases it has (`missing`: ids not here yet).
#[derive(Debug, Clone)]
pub struct BundleView {
    pub bundle: BundleRef,
    pub cases: Vec<Filed>,
    pub missing: Vec<String>,
}

impl BundleView {
    /// Whether the village may hand the bundle out now, or why not.
    pub fn hand_out_check(&self) -> Result<(), Msg> {
        if !self.missing.is_empty() {
            return Err(Msg::new(
                "部分子办件尚未同步到本节点",
                "some sub-cases are not on this node yet",
            ));
        }
        let states: Vec<&CaseState> = self.cases.iter().map(|f| &f.state).collect();
        ready_to_hand_out(&states)
    }
}

/// A bundle is handed out once no sub-case is still being handled (under review, waiting
/// for a supplement): every one is ready to issue or closed (rejected, withdrawn; or already
/// issued), and at least one is ready.
pub fn ready_to_hand_out(states: &[&CaseState]) -> Result<(), Msg> {
    let waiting = states
        .iter()
        .filter(|s| {
            matches!(
                s.status,
                Status::New | Status::UnderReview | Status::SupplementRequested
            )
        })
        .count();
    if waiting > 0 {
        return Err(Msg::new(
            format!("还有{waiting}个子办件未办结，全部办结后一次出件"),
            format!("{waiting} sub-case(s) not done yet; the bundle is handed out once all are"),
        ));
    }
    if !states.iter().any(|s| s.status == Status::ReadyToIssue) {
        return Err(Msg::new(
            "没有待出件的子办件（已出件或未予办理）",
            "no sub-case is ready to issue (handed out already, or not granted)",
        ));
    }
    Ok(())
}

/// The bundle's form: each field key once (the first item's definition), required when any
/// item requires it.
pub fn fields(items: &[&ServiceItem]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for f in items.iter().flat_map(|i| &i.fields) {
        match out.iter_mut().find(|g| g.key == f.key) {
            Some(g) => g.required |= f.required,
            None => out.push(f.clone()),
        }
    }
    out
}

/// The bundle's materials checklist: each key once (the first item's definition), required
/// when any item requires it, waivable only when every item that lists it allows it.
pub fn materials(items: &[&ServiceItem]) -> Vec<Material> {
    let mut out: Vec<Material> = Vec::new();
    for m in items.iter().flat_map(|i| &i.materials) {
        match out.iter_mut().find(|g| g.key == m.key) {
            Some(g) => {
                g.required |= m.required;
                g.waivable &= m.waivable;
                g.count = g.count.max(m.count);
            }
            None => out.push(m.clone()),
        }
    }
    out
}

/// Checks a bundle submission item by item with [`application::validate`], each item seeing
/// only its own fields and materials; problems come back once per key.
pub fn validate<'c>(
    catalog: &'c Catalog,
    input: &BundleInput,
    today: NaiveDate,
    blob_exists: &dyn Fn(&str) -> bool,
) -> Result<(&'c Bundle, Vec<Application>), FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(bundle) = catalog.bundle(input.bundle.trim()) else {
        errors.insert(
            "bundle".into(),
            Msg::new("请选择有效的一件事套餐", "unknown bundle"),
        );
        return Err(errors);
    };
    let items = catalog.bundle_items(bundle);
    for key in input.form.keys() {
        if !items.iter().any(|i| i.field(key).is_some()) {
            errors.insert(
                format!("form.{key}"),
                Msg::new("该套餐没有此项", "unknown field for this bundle"),
            );
        }
    }
    for m in &input.materials {
        if !items.iter().any(|i| i.material(&m.key).is_some()) {
            errors.insert(
                format!("materials.{}", m.key),
                Msg::new("该套餐不需要此材料", "unknown material for this bundle"),
            );
        }
    }
    let mut apps = Vec::with_capacity(items.len());
    for item in &items {
        let sub = ApplicationInput {
            item_code: item.code.clone(),
            applicant: input.applicant.clone(),
            proxy: input.proxy.clone(),
            form: input
                .form
                .iter()
                .filter(|(k, _)| item.field(k).is_some())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            materials: input
                .materials
                .iter()
                .filter(|m| item.material(&m.key).is_some())
                .cloned()
                .collect(),
        };
        match application::validate(catalog, &sub, today, blob_exists) {
            Ok(app) => apps.push(app),
            Err(found) => {
                for (key, msg) in found {
                    errors.entry(key).or_insert(msg);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok((bundle, apps))
    } else {
        Err(errors)
    }
}

impl Node {
    /// Validates and files a 一件事 bundle: one sub-case per item, each with its own receipt
    /// number, all carrying the same [`BundleRef`] and written in one commit. Returns once
    /// all are on disk; nothing is stored unless every item's part is valid.
    pub async fn file_bundle(
        &self,
        input: &BundleInput,
        photos: Vec<Vec<u8>>,
        actor: &Actor,
    ) -> Result<FiledBundle, NodeError> {
        let mut blobs = self.accepting(actor, photos)?;
        let fresh: Vec<&str> = blobs.iter().map(|(h, _)| h.as_str()).collect();
        let exists = |hash: &str| fresh.contains(&hash) || self.store.blob_exists(hash);
        let today = self.today();
        let (bundle, apps) =
            validate(&self.catalog, input, today, &exists).map_err(NodeError::Invalid)?;
        let ids: Vec<String> = apps
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let bundle_ref = BundleRef {
            id: ids.first().cloned().unwrap_or_default(),
            code: bundle.code.clone(),
            name: bundle.name.clone(),
            case_ids: ids.clone(),
        };
        let date = today.format("%Y%m%d").to_string();
        let mut cases = Vec::with_capacity(apps.len());
        for (app, id) in apps.into_iter().zip(ids) {
            let item = self
                .catalog
                .get(&app.item_code)
                .ok_or_else(|| NodeError::BadRequest(Msg::new("事项不存在", "unknown item")))?;
            let seq = self.store.reserve_receipt_seq(&date)?;
            let mut case = Case {
                id,
                receipt_no: format!("{}-{date}-{seq:04}", self.config.node.division),
                item_code: item.code.clone(),
                item_name: item.name.clone(),
                node: self.config.node.id.clone(),
                route: item.route_steps(),
                division: self.config.divisions(),
                applicant: app.applicant,
                proxy: app.proxy,
                form: app.form,
                materials: app.materials,
                bundle: Some(bundle_ref.clone()),
                events: vec![self.event_now(EventKind::Accepted, serde_json::json!({}), actor)],
                forged: Vec::new(),
            };
            self.sign_filing(&mut case)?;
            cases.push((case, seq));
        }
        let actor_id = case_doc::node_actor(&self.config.node.id);
        let mut docs = Vec::with_capacity(cases.len());
        for (case, _) in &cases {
            let mut doc = case_doc::build(case, actor_id.clone()).map_err(StoreError::from)?;
            docs.push(SavedDoc::of(&mut doc));
        }
        let states: Vec<CaseState> = cases.iter().map(|(c, _)| c.state()).collect();
        let mut new_cases = Vec::with_capacity(cases.len());
        for (((case, seq), doc), state) in cases.iter().zip(docs).zip(&states) {
            // A photo shared by several items travels with the first sub-case that uses it.
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut blobs)
                .into_iter()
                .partition(|(h, _)| case.materials.iter().any(|m| m.blob.as_deref() == Some(h)));
            blobs = rest;
            new_cases.push(NewCase {
                case,
                doc,
                summary: CaseSummary::of(case, state),
                receipt: (date.clone(), *seq),
                blobs: mine,
            });
        }
        self.store.put_new_cases(new_cases).await?;
        let receipts: Vec<&str> = cases.iter().map(|(c, _)| c.receipt_no.as_str()).collect();
        tracing::info!(bundle = %bundle_ref.code, receipts = ?receipts, id_number = %crate::idcard::mask(&input.applicant.id_number), "bundle accepted");
        Ok(FiledBundle {
            bundle: bundle_ref,
            cases: cases
                .into_iter()
                .zip(states)
                .map(|((case, _), state)| Filed { case, state })
                .collect(),
        })
    }

    /// The bundle of case `id` (a bundle's id or any of its sub-cases' ids), with the
    /// sub-cases this node holds.
    pub fn bundle_view(&self, id: &str) -> Result<BundleView, NodeError> {
        let not_found = || NodeError::NotFound(Msg::new("一件事套餐不存在", "no such bundle"));
        let case = self.store.case(id)?.ok_or_else(not_found)?;
        let bundle = case.bundle.clone().ok_or_else(not_found)?;
        let mut cases = Vec::with_capacity(bundle.case_ids.len());
        let mut missing = Vec::new();
        for sub in &bundle.case_ids {
            let found = if *sub == case.id {
                Some(case.clone())
            } else {
                self.store.case(sub)?
            };
            match found {
                Some(case) => {
                    let state = case.state();
                    cases.push(Filed { case, state });
                }
                None => missing.push(sub.clone()),
            }
        }
        Ok(BundleView {
            bundle,
            cases,
            missing,
        })
    }

    /// Hands a bundle out once: records `issued` on every sub-case that is ready to issue, in
    /// one commit. Refused, with nothing written, unless every sub-case is ready or closed.
    pub async fn issue_bundle(
        &self,
        id: &str,
        note: &str,
        actor: &Actor,
    ) -> Result<FiledBundle, NodeError> {
        if !may_record(actor.role, &EventKind::Issued) {
            return Err(NodeError::Forbidden(Msg::new(
                "当前角色不能办理“出件”",
                format!("the role {} does not record issued", actor.role.as_str()),
            )));
        }
        let note: String = note.trim().chars().take(1000).collect();
        let view = self.bundle_view(id)?;
        view.hand_out_check().map_err(NodeError::Conflict)?;
        let mut events: Vec<(String, Event)> = view
            .cases
            .iter()
            .filter(|f| f.state.status == Status::ReadyToIssue)
            .map(|f| {
                let payload = serde_json::json!({ "note": note, "bundle": view.bundle.id });
                (
                    f.case.id.clone(),
                    self.event_now(EventKind::Issued, payload, actor),
                )
            })
            .collect();
        for (case_id, event) in &mut events {
            self.sign_event(case_id, event)?;
        }
        let actor_id = case_doc::node_actor(&self.config.node.id);
        let written = self
            .store
            .append_events(events, actor_id)
            .await
            .map_err(crate::node::case_write_error)?;
        tracing::info!(bundle = %view.bundle.code, cases = written.len(), "bundle handed out");
        // The bundle's order, with each written case in place of its earlier state.
        let cases = view
            .cases
            .into_iter()
            .map(|f| match written.iter().find(|c| c.id == f.case.id) {
                Some(case) => Filed {
                    state: case.state(),
                    case: case.clone(),
                },
                None => f,
            })
            .collect();
        Ok(FiledBundle {
            bundle: view.bundle,
            cases,
        })
    }

    /// 即办件 in one visit: records `issued` and `picked_up` on an immediate item that is
    /// ready to issue, in one commit, so the applicant leaves with the result.
    pub async fn settle_at_counter(
        &self,
        case_id: &str,
        note: &str,
        actor: &Actor,
    ) -> Result<Filed, NodeError> {
        for kind in [EventKind::Issued, EventKind::PickedUp] {
            if !may_record(actor.role, &kind) {
                return Err(NodeError::Forbidden(Msg::new(
                    format!("当前角色不能办理“{}”", kind.zh()),
                    format!(
                        "the role {} does not record {}",
                        actor.role.as_str(),
                        kind.as_str()
                    ),
                )));
            }
        }
        let case = self
            .store
            .case(case_id)?
            .ok_or_else(|| NodeError::NotFound(Msg::new("案件不存在", "no such case")))?;
        let immediate = self
            .catalog
            .get(&case.item_code)
            .is_some_and(|i| i.kind == ItemKind::Immediate);
        if !immediate || case.bundle.is_some() {
            return Err(NodeError::Conflict(Msg::new(
                "只有单独受理的即办件可以当场办结",
                "only an immediate item filed alone is settled at the counter",
            )));
        }
        let note: String = note.trim().chars().take(1000).collect();
        let payload = serde_json::json!({ "note": note, "at_counter": true });
        // Two stamps from the one clock: `picked_up` folds after `issued`.
        let mut issued = self.event_now(EventKind::Issued, payload.clone(), actor);
        let mut picked_up = self.event_now(EventKind::PickedUp, payload, actor);
        self.sign_event(&case.id, &mut issued)?;
        self.sign_event(&case.id, &mut picked_up)?;
        let actor_id = case_doc::node_actor(&self.config.node.id);
        let mut written = self
            .store
            .append_events(
                vec![(case.id.clone(), issued), (case.id.clone(), picked_up)],
                actor_id,
            )
            .await
            .map_err(crate::node::case_write_error)?;
        let case = written
            .pop()
            .ok_or_else(|| StoreError::Corrupt("writer returned no case".into()))?;
        let state = case.state();
        Ok(Filed { case, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case_doc::test_support::sample_case;
    use crate::store::Store;

    fn new_case(c: &Case, seq: u64) -> NewCase<'_> {
        let mut doc = case_doc::build(c, case_doc::node_actor("v")).unwrap();
        NewCase {
            case: c,
            doc: SavedDoc::from_bytes(doc.save()),
            summary: CaseSummary::of(c, &c.state()),
            receipt: ("20261122".into(), seq),
            blobs: vec![],
        }
    }

    #[tokio::test]
    async fn sub_cases_are_stored_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("n.redb"), 64, 1024).unwrap();
        let a = sample_case();
        let mut b = sample_case();
        b.id = "c2".into();
        // The same receipt number twice: the second sub-case fails, so neither is stored.
        let refused = store.put_new_cases(vec![new_case(&a, 1), new_case(&b, 1)]);
        assert!(refused.await.is_err());
        assert_eq!(store.case_count().unwrap(), 0);
        b.receipt_no = "430181101001-20261122-0002".into();
        store
            .put_new_cases(vec![new_case(&a, 1), new_case(&b, 2)])
            .await
            .unwrap();
        assert_eq!(store.case_count().unwrap(), 2);
    }

    #[test]
    fn the_form_and_checklist_hold_each_key_once() {
        let catalog = Catalog::parse(crate::DEMO_CATALOG, std::path::Path::new("c")).unwrap();
        let items = catalog.bundle_items(catalog.bundle("YJS-LNR").unwrap());
        let keys: Vec<String> = fields(&items).into_iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "birth_date",
                "address",
                "hukou_type",
                "emergency_contact_phone",
                "bank_account",
                "guardian_phone"
            ]
        );
        let m = materials(&items);
        assert_eq!(m.iter().filter(|m| m.key == "id_card").count(), 1);
        assert!(
            m.iter()
                .any(|m| m.key == "social_security_card" && m.required)
        );
    }

    #[test]
    fn a_bundle_waits_for_every_sub_case() {
        let route = ["village:accept", "town:review", "village:issue"].map(String::from);
        let mut ready = crate::fold::fold(&route, &[]);
        ready.status = Status::ReadyToIssue;
        let mut review = ready.clone();
        review.status = Status::UnderReview;
        let mut rejected = ready.clone();
        rejected.status = Status::Rejected;
        assert!(ready_to_hand_out(&[&ready, &review]).is_err());
        assert!(ready_to_hand_out(&[&ready, &rejected]).is_ok());
        assert!(ready_to_hand_out(&[&rejected, &rejected]).is_err());
    }
}

//! A rogue village for the trust tests: a compromised village PC, with only its own
//! certificate and its own store. While its node is stopped, it writes forged data into
//! that store through the core library's public API — a case claiming another village's
//! case id, a case filed for another village, events in another node's name (unsigned,
//! signed with its own key, or replayed from another case), a case with a field far over
//! its bound — and its node sends them to the county at the next sync.

use std::path::Path;

use anyhow::{Context, Result};
use yiciban_core::case_doc::{self, Case, Divisions};
use yiciban_core::catalog::{Catalog, Tier};
use yiciban_core::config::Config;
use yiciban_core::event::{Event, EventKind};
use yiciban_core::hlc::Hlc;
use yiciban_core::seal::Signer;
use yiciban_core::store::{SavedDoc, Store};
use yiciban_core::summary::CaseSummary;

use crate::workload::Workload;

/// The rogue's store, opened while its node is stopped.
#[derive(Debug)]
pub struct Rogue {
    pub store: Store,
    pub node_id: String,
    pub divisions: Divisions,
    catalog: Catalog,
    signer: Signer,
    seq: u64,
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl Rogue {
    /// Opens the stopped rogue node of `config` (enrolled: its key signs its own filings).
    pub fn open(config: &Path) -> Result<Self> {
        let cfg = Config::load(config)?;
        let catalog = Catalog::load(&cfg.catalog_path())?;
        let tls = yiciban_core::enrol::TlsDir::new(cfg.tls_dir());
        let key = std::fs::read_to_string(tls.path("node.key"))?;
        let cert = std::fs::read_to_string(tls.path("node.pem"))?;
        let signer = Signer::from_pem(&key, &cert)?;
        let store =
            Store::open(&cfg.store_path(), 8, cfg.store.blob_max_bytes)?.for_node(&cfg.node.id);
        Ok(Self {
            store,
            node_id: cfg.node.id.clone(),
            divisions: cfg.divisions(),
            catalog,
            signer,
            seq: 9000,
        })
    }

    fn event(&self, kind: EventKind, node: &str, tier: Tier, payload: serde_json::Value) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            at: Hlc {
                wall_ms: now_ms(),
                counter: 0,
            },
            node: node.to_string(),
            tier,
            user: "clerk".into(),
            role: "clerk".into(),
            kind,
            payload,
            sig: None,
        }
    }

    /// A case of `item` with id `id` filed by the rogue under `divisions`, its filing signed
    /// with the rogue's own key.
    fn case(&mut self, id: &str, divisions: Divisions, item: &str) -> Result<Case> {
        let item = self.catalog.get(item).context("item")?;
        let app = Workload::new(self.seq).application(item);
        let input: yiciban_core::application::ApplicationInput = serde_json::from_value(app)?;
        let today = chrono::Utc::now().date_naive();
        let app = yiciban_core::application::validate(&self.catalog, &input, today, &|_| false)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.seq += 1;
        let accepted = self.event(
            EventKind::Accepted,
            &self.node_id.clone(),
            Tier::Village,
            serde_json::json!({}),
        );
        let mut case = Case {
            id: id.to_string(),
            receipt_no: format!("{}-20261207-{:04}", divisions.village, self.seq),
            item_code: item.code.clone(),
            item_name: item.name.clone(),
            node: self.node_id.clone(),
            route: item.route_steps(),
            division: divisions,
            applicant: app.applicant,
            proxy: app.proxy,
            form: app.form,
            materials: app.materials,
            bundle: None,
            events: vec![accepted],
            forged: Vec::new(),
        };
        let digest = yiciban_core::authorship::filing_digest(&case);
        yiciban_core::authorship::sign(&case.id, Some(&digest), &mut case.events[0], &self.signer)?;
        Ok(case)
    }

    /// Stores `case` as it is, through the store's filing path (no bound checked there).
    async fn put(&self, case: &Case) -> Result<()> {
        let mut doc = case_doc::build(case, case_doc::node_actor(&self.node_id))?;
        let summary = CaseSummary::of(case, &case.state());
        self.store
            .put_new_case(
                case,
                SavedDoc::of(&mut doc),
                summary,
                ("20261207".into(), self.seq),
                Vec::new(),
            )
            .await?;
        Ok(())
    }

    /// A case of its own village, honestly filed and signed: what forged events go onto.
    pub async fn own_case(&mut self, item: &str) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let case = self.case(&id, self.divisions.clone(), item)?;
        self.put(&case).await?;
        Ok(id)
    }

    /// Case takeover: a document with another village's case id `case_id`, filed under the
    /// rogue's own village.
    pub async fn claim_case(&mut self, case_id: &str) -> Result<()> {
        let case = self.case(case_id, self.divisions.clone(), "MZ003")?;
        self.put(&case).await
    }

    /// A new case filed for another village (`divisions`), by the rogue.
    pub async fn file_for(&mut self, divisions: Divisions) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let case = self.case(&id, divisions, "MZ003")?;
        self.put(&case).await?;
        Ok(id)
    }

    /// A case of its own village whose agent's relation is `chars` characters long.
    pub async fn oversized(&mut self, chars: usize) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut case = self.case(&id, self.divisions.clone(), "MZ003")?;
        case.proxy = Some(yiciban_core::application::Person {
            name: "王五".into(),
            id_number: case.applicant.id_number.clone(),
            phone: case.applicant.phone.clone(),
            relation: Some("亲".repeat(chars)),
        });
        let digest = yiciban_core::authorship::filing_digest(&case);
        yiciban_core::authorship::sign(&case.id, Some(&digest), &mut case.events[0], &self.signer)?;
        self.put(&case).await?;
        Ok(id)
    }

    /// Appends `event` to case `case_id` in the rogue's store, written by its own Automerge
    /// actor whatever node the event names.
    pub async fn append(&self, case_id: &str, event: Event) -> Result<()> {
        let bytes = self
            .store
            .case_doc_bytes(case_id)?
            .context("the rogue does not hold that case")?;
        let mut doc =
            automerge::AutoCommit::load(&bytes)?.with_actor(case_doc::node_actor(&self.node_id));
        let before = doc.get_heads();
        case_doc::append_event(&mut doc, &event)?;
        let changes = doc
            .get_changes(&before)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        self.store.apply_changes(case_id, changes).await?;
        Ok(())
    }

    /// A decision of `kind` on case `case_id` in the name of `node` (`tier`), unsigned.
    pub fn decision(&self, kind: EventKind, node: &str, tier: Tier) -> Event {
        let mut e = self.event(kind, node, tier, serde_json::json!({"note": ""}));
        e.user = "reviewer".into();
        e.role = "reviewer".into();
        e
    }

    /// `event` signed with the rogue's own key for case `case_id`, whatever it claims.
    pub fn signed_by_rogue(&self, case_id: &str, mut event: Event) -> Result<Event> {
        yiciban_core::authorship::sign(case_id, None, &mut event, &self.signer)?;
        Ok(event)
    }
}

//! Router tests with `oneshot`: no socket, a real store in a temporary folder.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;
use yiciban_core::catalog::Catalog;
use yiciban_core::config::Config;
use yiciban_core::node::Node;
use yiciban_core::store::Store;
use yiciban_core::users::Role;

use crate::{AppState, router};

mod admin;
mod bundle;
mod stats;
mod supervision;

async fn state(dir: &tempfile::TempDir) -> AppState {
    node_state(dir, "village", "").await
}

/// A node of `tier` (`village`, `town`, `county`) with users `clerk`, `reviewer` and
/// `approver` (password `password-1`); `extra` is appended to its config.
async fn node_state(dir: &tempfile::TempDir, tier: &str, extra: &str) -> AppState {
    let (id, division) = match tier {
        "village" => ("village-test", "430181101001"),
        "town" => ("town-test", "430181101000"),
        _ => ("county-test", "430181000000"),
    };
    let config_path = dir.path().join(format!("{tier}.toml"));
    std::fs::write(dir.path().join("catalog.toml"), yiciban_core::DEMO_CATALOG).unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"
[node]
id = "{id}"
role = "{tier}"
name = "测试{tier}"
division = "{division}"
town_division = "430181101000"
county_division = "430181000000"
[http]
listen = "127.0.0.1:0"
[store]
path = "node.redb"
blob_max_bytes = 1024
[catalog]
path = "catalog.toml"
{extra}
"#
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let catalog = Catalog::load(&config.catalog_path()).unwrap();
    let store = Store::open(&config.store_path(), 64, config.store.blob_max_bytes).unwrap();
    let node = Node::new(config, catalog, store).unwrap();
    for (name, display, role) in [
        ("clerk", "受理员", Role::Clerk),
        ("reviewer", "审核员", Role::Reviewer),
        ("approver", "审批员", Role::Approver),
    ] {
        node.add_user(name, display, role, "password-1")
            .await
            .unwrap();
    }
    AppState::new(node)
}

/// Writes a calendar of weekends only for 2024–2040 into `dir` and returns the config lines
/// that use it, so a deadline test holds whatever day it runs on.
fn weekends_calendar(dir: &tempfile::TempDir) -> String {
    let years: Vec<String> = (2024..=2040).map(|y| y.to_string()).collect();
    std::fs::write(
        dir.path().join("weekends.toml"),
        format!("schema = 1\nyears = [{}]\n", years.join(", ")),
    )
    .unwrap();
    "[calendar]\npath = \"weekends.toml\"".to_string()
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Logs in through the API; returns the cookie header and the CSRF token.
async fn login(state: &AppState) -> (String, String) {
    login_as(state, "clerk").await
}

async fn login_as(state: &AppState, username: &str) -> (String, String) {
    let resp = router(state.clone())
        .oneshot(
            Request::post("/api/v1/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    r#"{{"username":"{username}","password":"password-1"}}"#
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let body: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    (
        cookie.split(';').next().unwrap().to_string(),
        body["csrf_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn pages_redirect_to_login_and_the_api_answers_401() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(&dir).await);
    let page = app
        .clone()
        .oneshot(Request::get("/cases").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[header::LOCATION], "/login");
    let api = app
        .oneshot(Request::get("/api/v1/catalog").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(api).await.contains("\"error\":\"unauthorized\""));
}

#[tokio::test]
async fn login_rotates_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (first, _) = login(&state).await;
    let (second, _) = login(&state).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn invalid_form_keeps_what_was_typed_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (cookie, csrf) = login(&state).await;
    let boundary = "XyZ";
    let mut body = String::new();
    for (name, value) in [
        ("csrf", csrf.as_str()),
        ("applicant.name", "王𠈌"),
        ("applicant.id_number", "110105194912310021"),
        ("applicant.phone", "13800138000"),
        ("form.address", "示范村3组"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let resp = router(state.clone())
        .oneshot(
            Request::post("/apply/MZ003")
                .header(header::COOKIE, &cookie)
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = body_text(resp).await;
    assert!(html.contains("校验位"), "the ID error is shown");
    assert!(html.contains("value=\"王𠈌\""), "the name is kept");
    assert!(html.contains("示范村3组"), "the form value is kept");
    assert!(html.contains("缺少必需材料"), "every problem at once");
    assert_eq!(state.node.store.case_count().unwrap(), 0);
}

fn multipart(boundary: &str, fields: &[(&str, &str)], photo: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .bytes(),
        );
    }
    if let Some((name, bytes)) = photo {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n").bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    body
}

#[tokio::test]
async fn form_with_a_photo_files_the_case_and_stores_the_photo_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (cookie, csrf) = login(&state).await;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(200, 7);
    let fields = [
        ("csrf", csrf.as_str()),
        ("applicant.name", "王𠈌"),
        ("applicant.id_number", "11010519491231002x"),
        ("applicant.phone", "13800138000"),
        ("form.birth_date", "1949-12-31"),
        ("form.address", "示范村3组"),
        ("form.bank_account", "6217000000001234"),
        ("material.hukou_booklet", "original"),
        ("material.social_security_card", "copy"),
    ];
    let resp = router(state.clone())
        .oneshot(
            Request::post("/apply/MZ003")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "multipart/form-data; boundary=B0")
                .body(Body::from(multipart(
                    "B0",
                    &fields,
                    Some(("photo.id_card", &png)),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "{}",
        body_text(resp).await
    );
    let summaries = state.node.store.list_cases(&Default::default()).unwrap();
    assert_eq!(summaries.len(), 1);
    let case = state.node.store.case(&summaries[0].id).unwrap().unwrap();
    let photo = case.materials.iter().find(|m| m.key == "id_card").unwrap();
    assert_eq!(
        photo.status,
        yiciban_core::application::MaterialStatus::Photo
    );
    assert_eq!(
        state
            .node
            .store
            .blob(photo.blob.as_deref().unwrap())
            .unwrap()
            .unwrap(),
        png
    );
    assert_eq!(case.applicant.name, "王𠈌");
    assert_eq!(case.applicant.id_number, "11010519491231002X");
}

#[tokio::test]
async fn oversized_photo_is_413_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (cookie, csrf) = login(&state).await;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(2048, 0);
    let resp = router(state.clone())
        .oneshot(
            Request::post("/api/v1/blobs")
                .header(header::COOKIE, &cookie)
                .header("x-csrf-token", &csrf)
                .body(Body::from(png))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_text(resp).await.contains("照片过大"));
}

#[tokio::test]
async fn writes_without_the_csrf_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (cookie, _) = login(&state).await;
    let resp = router(state.clone())
        .oneshot(
            Request::post("/api/v1/applications")
                .header(header::COOKIE, &cookie)
                .header("x-csrf-token", "forged")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// A logged-in user of one node, for the review-flow tests.
struct Session {
    state: AppState,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn new(state: &AppState, username: &str) -> Self {
        let (cookie, csrf) = login_as(state, username).await;
        Self {
            state: state.clone(),
            cookie,
            csrf,
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        (status, body_text(resp).await)
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.send(
            Request::get(path)
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.get(path).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let (status, text) = self
            .send(
                Request::post(path)
                    .header(header::COOKIE, &self.cookie)
                    .header("x-csrf-token", &self.csrf)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        (status, serde_json::from_str(&text).unwrap())
    }

    /// Records an event through the API.
    async fn event(&self, id: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        self.post_json(&format!("/api/v1/applications/{id}/events"), body)
            .await
    }

    /// Posts a page form (urlencoded) with this session's CSRF token.
    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut pairs = vec![("csrf", self.csrf.as_str())];
        pairs.extend_from_slice(fields);
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            Request::post(path)
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Files an application through the API; returns the case id.
    async fn file(&self, item: &str) -> (String, serde_json::Value) {
        let (form, materials) = match item {
            "MZ003" => (
                serde_json::json!({"birth_date": "1949-12-31", "address": "示范村3组", "bank_account": "6217000000001234"}),
                serde_json::json!([
                    {"key": "id_card", "status": "original"},
                    {"key": "hukou_booklet", "status": "original"},
                    {"key": "social_security_card", "status": "copy"},
                ]),
            ),
            "CL001" => (
                serde_json::json!({"disability_category": "肢体残疾", "disability_cause": "意外伤害", "address": "示范村3组", "home_assessment": "否"}),
                serde_json::json!([
                    {"key": "id_and_hukou", "status": "original"},
                    {"key": "photo", "status": "original"},
                    {"key": "application_form", "status": "original"},
                ]),
            ),
            _ => (
                serde_json::json!({"insured_category": "普通城乡居民", "address": "示范村3组"}),
                serde_json::json!([{"key": "id_document", "status": "original"}]),
            ),
        };
        let (status, body) = self
            .post_json(
                "/api/v1/applications",
                serde_json::json!({
                    "item_code": item,
                    "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
                    "form": form,
                    "materials": materials,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["id"].as_str().unwrap().to_string(), body)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Carries a case from one node's store to another's, as a sync session would: every
/// Automerge change of its document, merged by the receiver's writer.
async fn ship(from: &AppState, to: &AppState, id: &str) {
    let bytes = from.node.store.case_doc_bytes(id).unwrap().unwrap();
    let case = from.node.store.case(id).unwrap().unwrap();
    // An empty document of the core's document type, without naming the automerge crate
    // (not a dependency of this one).
    fn empty_like<T: Default>(_: &T) -> T {
        T::default()
    }
    let built =
        yiciban_core::case_doc::build(&case, yiciban_core::case_doc::node_actor("t")).unwrap();
    let mut doc = empty_like(&built);
    doc.load_incremental(&bytes).unwrap();
    let changes = doc
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    to.node.store.apply_changes(id, changes).await.unwrap();
}

#[tokio::test]
async fn the_api_records_every_kind_through_review_supplement_and_rejection() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;

    let (id, filed) = clerk.file("MZ003").await;
    assert_eq!(filed["state"]["status"], "under_review");
    assert_eq!(filed["state"]["step"], "town:review");
    assert_eq!(filed["state"]["tier"], "town");

    // Role × kind is checked before anything reaches the core; unknown kinds are named.
    let (status, body) = clerk
        .event(&id, serde_json::json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("受理员不能办理“审核通过”")
    );
    let (status, body) = clerk
        .event(&id, serde_json::json!({"kind": "approve_all"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("未知的办理操作“approve_all”")
    );
    let (status, body) = clerk
        .event(&id, serde_json::json!({"text": "no kind"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "comment", "text": "已电话告知申请人"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    ship(&village, &town, &id).await;
    let (_, detail) = reviewer
        .get_json(&format!("/api/v1/applications/{id}"))
        .await;
    assert_eq!(detail["state"]["tier"], "town");
    assert_eq!(
        detail["actions"],
        serde_json::json!([
            "review_passed",
            "supplement_requested",
            "rejected",
            "comment"
        ])
    );
    let (status, body) = reviewer
        .event(
            &id,
            serde_json::json!({"kind": "supplement_requested", "materials": "户口簿原件\n银行卡复印件", "note": "请于5个工作日内补齐"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "supplement_requested");
    assert_eq!(body["state"]["step"], "village:supplement");
    assert_eq!(body["state"]["tier"], "village");
    assert_eq!(
        body["state"]["missing_materials"],
        serde_json::json!(["户口簿原件", "银行卡复印件"])
    );
    // The baton is at the village now: the town's decision is refused, nothing written.
    let events_before = body["state"]["event_count"].clone();
    let (status, body) = reviewer
        .event(&id, serde_json::json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, detail) = reviewer
        .get_json(&format!("/api/v1/applications/{id}"))
        .await;
    assert_eq!(detail["state"]["event_count"], events_before);

    ship(&town, &village, &id).await;
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "supplement_provided", "note": "已收齐"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "under_review");
    assert_eq!(body["state"]["step"], "town:review");

    ship(&village, &town, &id).await;
    let (status, body) = reviewer
        .event(&id, serde_json::json!({"kind": "rejected"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("须写明理由"));
    let (status, body) = reviewer
        .event(
            &id,
            serde_json::json!({"kind": "rejected", "reason": "户籍不在本镇"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "rejected");
    assert_eq!(body["state"]["step"], serde_json::Value::Null);
    assert_eq!(body["state"]["tier"], serde_json::Value::Null);

    // The village prints the refusal with its reason, who decided, and no full ID number.
    ship(&town, &village, &id).await;
    let (status, page) = clerk.get(&format!("/cases/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("href=\"/cases/{id}/result\"")));
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("办理结果通知书"));
    assert!(page.contains("不予许可") && page.contains("理由：户籍不在本镇"));
    assert!(page.contains("reviewer（镇级 town-test）"));
    assert!(page.contains("1101**********002X") && !page.contains("11010519491231002X"));
    assert!(
        page.contains("测试village"),
        "the node's name is on the notice"
    );
    assert!(
        page.contains("id=\"result-qr\""),
        "the place for the signed QR"
    );
}

#[tokio::test]
async fn the_county_approves_after_the_town_and_the_village_issues() {
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let village = node_state(&dirs[0], "village", "").await;
    let town = node_state(&dirs[1], "town", "").await;
    let county = node_state(&dirs[2], "county", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let approver = Session::new(&county, "approver").await;

    let (id, _) = clerk.file("CL001").await;
    ship(&village, &town, &id).await;
    let (status, body) = reviewer
        .event(&id, serde_json::json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["step"], "county:approve");
    assert_eq!(body["state"]["tier"], "county");
    // The reviewer may not approve, even where the baton is.
    ship(&town, &county, &id).await;
    let (status, _) = Session::new(&county, "reviewer")
        .await
        .event(&id, serde_json::json!({"kind": "approved"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = approver.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-approved\""), "{page}");
    assert!(!page.contains("id=\"action-review_passed\""));
    assert!(page.contains("由本节点（县级）办理"));
    let (status, body) = approver
        .event(&id, serde_json::json!({"kind": "approved", "note": "同意"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "ready_to_issue");
    assert_eq!(body["state"]["tier"], "village");

    ship(&county, &village, &id).await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-issued\""), "{page}");
    assert!(
        !page.contains("id=\"action-withdrawn\""),
        "decided: no withdrawal"
    );
    let (status, _) = clerk
        .post_form(&format!("/cases/{id}/events"), &[("kind", "issued")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = clerk
        .event(&id, serde_json::json!({"kind": "picked_up"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "completed");
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("审批通过") && page.contains("approver（县级 county-test）"));
    assert!(page.contains("出件时间") && page.contains("领取时间"));
}

#[tokio::test]
async fn an_immediate_item_is_issued_at_the_counter_and_has_a_result_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let (id, filed) = clerk.file("YB001").await;
    assert_eq!(filed["state"]["status"], "ready_to_issue");
    assert_eq!(filed["state"]["step"], "village:issue");
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-issued\""));
    assert!(
        page.contains("id=\"action-withdrawn\""),
        "undecided: may withdraw"
    );
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("准予办理（即办件，当场办结）"));
    let (status, _) = clerk
        .event(&id, serde_json::json!({"kind": "issued"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = clerk
        .event(&id, serde_json::json!({"kind": "issued"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-picked_up\"") && !page.contains("id=\"action-issued\""));
}

#[tokio::test]
async fn a_case_under_review_has_no_result_yet() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let (id, _) = clerk.file("MZ003").await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(!page.contains("/result\""));
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("尚未作出办理结果"));
}

#[tokio::test]
async fn the_queue_holds_the_cases_whose_baton_is_here_oldest_first() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let (review, _) = clerk.file("MZ003").await;
    let (first, _) = clerk.file("YB001").await;
    let (second, _) = clerk.file("YB001").await;
    let (_, withdrawn) = clerk.file("YB001").await;
    let withdrawn = withdrawn["id"].as_str().unwrap().to_string();
    let (status, _) = clerk
        .event(&withdrawn, serde_json::json!({"kind": "withdrawn"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, q) = clerk.get_json("/api/v1/queue").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "village baton only, oldest first, open only"
    );
    assert_eq!(q["total"], 2);

    let (status, page) = clerk.get("/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("href=\"/queue\""), "in the nav");
    let (a, b) = (
        page.find(&format!("/cases/{first}")).unwrap(),
        page.find(&format!("/cases/{second}")).unwrap(),
    );
    assert!(a < b, "oldest first");
    assert!(!page.contains(&format!("/cases/{review}")));
    assert!(page.contains("1101**********002X") && !page.contains("11010519491231002X"));
    assert!(page.contains("430181101001"), "the village");
    assert!(page.contains("村出件（当场办结）"), "the step by name");

    for id in [&review, &first] {
        ship(&village, &town, id).await;
    }
    let (_, q) = reviewer.get_json("/api/v1/queue").await;
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [review.as_str()]);
    let (_, page) = reviewer.get("/queue").await;
    assert!(page.contains("镇审核"));
}

#[tokio::test]
async fn the_case_page_shows_the_baton_missing_materials_photos_and_fitting_actions() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;

    // A case with a photographed ID card.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(200, 7);
    let (_, text) = clerk
        .send(
            Request::post("/api/v1/blobs")
                .header(header::COOKIE, &clerk.cookie)
                .header("x-csrf-token", &clerk.csrf)
                .body(Body::from(png))
                .unwrap(),
        )
        .await;
    let hash = serde_json::from_str::<serde_json::Value>(&text).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, filed) = clerk
        .post_json(
            "/api/v1/applications",
            serde_json::json!({
                "item_code": "MZ003",
                "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
                "form": {"birth_date": "1949-12-31", "address": "示范村3组", "bank_account": "6217000000001234"},
                "materials": [
                    {"key": "id_card", "status": "photo", "blob": hash},
                    {"key": "hukou_booklet", "status": "original"},
                    {"key": "social_security_card", "status": "copy"},
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();

    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(
        page.contains("镇审核") && page.contains("等待镇级办理"),
        "{page}"
    );
    assert!(page.contains(&format!("<img class=\"photo\" src=\"/blobs/{hash}\"")));
    assert!(page.contains("id=\"action-comment\"") && page.contains("id=\"action-withdrawn\""));
    for kind in [
        "review_passed",
        "rejected",
        "supplement_requested",
        "issued",
        "approved",
    ] {
        assert!(!page.contains(&format!("id=\"action-{kind}\"")), "{kind}");
    }

    ship(&village, &town, &id).await;
    let (_, page) = reviewer.get(&format!("/cases/{id}")).await;
    assert!(page.contains("由本节点（镇级）办理"));
    assert!(
        page.contains("照片尚未同步到本节点"),
        "the photo follows its case"
    );
    for kind in [
        "review_passed",
        "rejected",
        "supplement_requested",
        "comment",
    ] {
        assert!(page.contains(&format!("id=\"action-{kind}\"")), "{kind}");
    }
    for kind in ["approved", "withdrawn", "issued", "supplement_provided"] {
        assert!(!page.contains(&format!("id=\"action-{kind}\"")), "{kind}");
    }

    let (status, _) = reviewer
        .post_form(
            &format!("/cases/{id}/events"),
            &[
                ("kind", "supplement_requested"),
                ("materials", "户口簿原件\r\n银行卡复印件"),
                ("note", "请带原件"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    ship(&town, &village, &id).await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"missing-materials\""));
    assert!(page.contains("<li>户口簿原件</li>") && page.contains("<li>银行卡复印件</li>"));
    assert!(page.contains("说明：请带原件"));
    assert!(page.contains("id=\"action-supplement_provided\""), "{page}");
    assert!(
        page.contains("所缺材料：户口簿原件、银行卡复印件"),
        "on the timeline"
    );
}

#[tokio::test]
async fn a_refused_action_shows_the_message_and_keeps_what_was_typed() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let (id, _) = clerk.file("MZ003").await;
    ship(&village, &town, &id).await;
    let path = format!("/cases/{id}/events");

    // No materials listed: the core refuses; the note stays in the supplement form.
    let (status, page) = reviewer
        .post_form(
            &path,
            &[("kind", "supplement_requested"), ("note", "请补齐后再来")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("一次性告知须列明所缺材料"), "{page}");
    let form = &page[page.find("id=\"action-supplement_requested\"").unwrap()..];
    let form = &form[..form.find("</form>").unwrap()];
    assert!(form.contains(">请补齐后再来</textarea>"), "{form}");

    // The case moved on: the review is refused and what was typed is still shown.
    let (status, _) = reviewer
        .event(
            &id,
            serde_json::json!({"kind": "supplement_requested", "materials": ["户口簿"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, page) = reviewer
        .post_form(
            &path,
            &[("kind", "review_passed"), ("note", "同意，材料齐全")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("当前状态下不能办理此操作"), "{page}");
    assert!(page.contains("id=\"unsent\"") && page.contains("同意，材料齐全"));

    // A kind the role does not record, and an unknown one, are refused on the page too.
    let (status, page) = reviewer.post_form(&path, &[("kind", "issued")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("审核员不能办理“出件”"));
    let (status, page) = reviewer
        .post_form(&path, &[("kind", "approve_all"), ("text", "x")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("未知的办理操作"));
    // Without the CSRF token nothing is written.
    let (status, _) = reviewer
        .send(
            Request::post(&path)
                .header(header::COOKIE, &reviewer.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("kind=comment&text=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn enroll_needs_no_login_answers_in_json_and_bounds_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(&dir).await);
    let post = |body: Vec<u8>| {
        Request::post("/api/v1/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let req = serde_json::json!({"token_id": "0123456789abcdef", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----", "mac": "00"});
    // No session, no CSRF token: a village is no certificate authority, and says so in JSON.
    let resp = app
        .clone()
        .oneshot(post(req.to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("县级证书机构"));
    let resp = app
        .clone()
        .oneshot(post(b"{not json".to_vec()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(resp).await.contains("\"error\":\"bad_request\""));
    let resp = app.oneshot(post(vec![b' '; 17 * 1024])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_text(resp).await.contains("\"error\":\"too_large\""));
}

#[tokio::test]
async fn health_and_every_page_show_the_link_state() {
    let dir = tempfile::tempdir().unwrap();
    let alone = state(&dir).await;
    let clerk = Session::new(&alone, "clerk").await;
    let (status, health) = clerk.get_json("/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["links"], serde_json::json!([]));
    assert_eq!(health["enrolled"], false);
    assert_eq!(health["link"], "单机运行（未配置同步）");
    assert_eq!(health["cases"], 0, "existing fields stay");
    for path in ["/cases", "/queue", "/catalog"] {
        let (_, page) = clerk.get(path).await;
        assert!(page.contains("单机运行（未配置同步）"), "{path}");
    }

    let dir = tempfile::tempdir().unwrap();
    let unenrolled = node_state(&dir, "village", "[sync]\ncounty = \"127.0.0.1:9\"").await;
    let clerk = Session::new(&unenrolled, "clerk").await;
    let (_, page) = clerk.get("/queue").await;
    assert!(page.contains("未注册：请运行 yiciban enroll"), "{page}");
    let (_, health) = clerk.get_json("/api/v1/health").await;
    assert_eq!(health["enrolled"], false);
    assert_eq!(health["link"], "未注册：请运行 yiciban enroll");
}

/// Puts the county CA in `dir/tls` (the default TLS folder of `node_state`'s nodes); with
/// `enrol_as`, also that node's key and certificate, as `yiciban init`/`enroll` would.
fn county_tls(county_dir: &tempfile::TempDir, others: &[&tempfile::TempDir]) {
    use yiciban_core::enrol::TlsDir;
    use yiciban_transport::identity::NodeIdentity;
    let county = TlsDir::new(county_dir.path().join("tls"));
    let id = NodeIdentity::new("county-test", "county", "430181000000").unwrap();
    county.init_county(&id).unwrap();
    for dir in others {
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        std::fs::copy(county.path("ca.pem"), dir.path().join("tls/ca.pem")).unwrap();
    }
}

async fn verify_page(state: &AppState, code: &str) -> (StatusCode, String) {
    let resp = router(state.clone())
        .oneshot(
            Request::get(format!("/verify?p={}", urlencode(code)))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    (status, body_text(resp).await)
}

#[tokio::test]
async fn the_county_seals_its_approval_and_any_node_verifies_it_without_login() {
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    county_tls(&dirs[2], &[&dirs[0]]);
    let village = node_state(&dirs[0], "village", "").await;
    let town = node_state(&dirs[1], "town", "").await;
    let county = node_state(&dirs[2], "county", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let approver = Session::new(&county, "approver").await;

    let (id, _) = clerk.file("CL001").await;
    ship(&village, &town, &id).await;
    let (status, body) = reviewer
        .event(&id, serde_json::json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Not the final decision: nothing sealed yet.
    let (_, detail) = reviewer
        .get_json(&format!("/api/v1/applications/{id}"))
        .await;
    assert!(detail["result"].is_null(), "{detail}");
    ship(&town, &county, &id).await;
    let (status, body) = approver
        .event(&id, serde_json::json!({"kind": "approved", "note": "同意"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "ready_to_issue");

    // The seal travels with the event to the village.
    ship(&county, &village, &id).await;
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    let code = detail["result"]["qr_payload"].as_str().unwrap().to_string();
    assert_eq!(detail["result"]["signed_by"], "county-test");
    assert_eq!(detail["result"]["decision"], "approved");
    assert!(code.starts_with("YCB1."));
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<svg") && page.contains("电子印章：county-test"));
    assert!(!page.contains("id=\"unsigned\""));

    // Valid, with the summary, and no session needed.
    let receipt = detail["receipt_no"].as_str().unwrap();
    let (status, page) = verify_page(&village, &code).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"verify-valid\""), "{page}");
    assert!(page.contains(receipt) && page.contains("审批通过"));
    assert!(page.contains("王*") && page.contains("1101**********002X"));
    assert!(
        !page.contains("11010519491231002X"),
        "the full ID number never shows"
    );

    // One altered character fails, with the reason.
    let mut altered = code.clone();
    let at = code.len() / 2;
    let flip = if &code[at..=at] == "A" { "B" } else { "A" };
    altered.replace_range(at..=at, flip);
    let (status, page) = verify_page(&village, &altered).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"verify-invalid\"") && !page.contains("id=\"verify-valid\""));
    // Garbage.
    let (_, page) = verify_page(&village, "<script>alert(1)</script>").await;
    assert!(page.contains("id=\"verify-invalid\"") && page.contains("格式错误"));
    assert!(!page.contains("<script>alert"), "echoed text is escaped");
    // A node without the county CA says it cannot verify.
    let (_, page) = verify_page(&town, &code).await;
    assert!(page.contains("id=\"verify-invalid\"") && page.contains("无法核验"));
    // An empty form checks nothing.
    let (status, page) = verify_page(&village, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("id=\"verify-invalid\"") && page.contains("name=\"p\""));
}

#[tokio::test]
async fn a_decision_at_a_node_without_a_key_is_unsigned_and_says_so() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let (id, _) = clerk.file("MZ003").await;
    ship(&village, &town, &id).await;
    let (status, body) = reviewer
        .event(
            &id,
            serde_json::json!({"kind": "rejected", "reason": "材料不全"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ship(&town, &village, &id).await;
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    assert_eq!(detail["state"]["status"], "rejected");
    assert!(detail["result"].is_null(), "{detail}");
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"unsigned\"") && page.contains("未签章 / unsigned"));
}

#[tokio::test]
async fn the_full_id_number_is_a_post_and_every_full_view_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let clerk = Session::new(&state, "clerk").await;
    let (id, _) = clerk.file("MZ003").await;
    // Reading shows the number masked and writes nothing to the audit trail.
    let before = state.node.store.verify_audit().unwrap().unwrap().count;
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    assert_eq!(detail["applicant"]["id_number"], "1101**********002X");
    let (status, page) = clerk.get(&format!("/cases/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"show-full-id\""), "{page}");
    assert!(!page.contains("11010519491231002X"));
    assert_eq!(
        state.node.store.verify_audit().unwrap().unwrap().count,
        before
    );
    // Without the CSRF token: refused, nothing shown, nothing logged.
    let (status, text) = clerk
        .send(
            Request::post(format!("/cases/{id}/personal-data"))
                .header(header::COOKIE, &clerk.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(status, StatusCode::OK);
    assert!(!text.contains("11010519491231002X"));
    // The page action and the API each show it in full and log one entry.
    let (status, page) = clerk
        .post_form(&format!("/cases/{id}/personal-data"), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("11010519491231002X"));
    assert!(!page.contains("id=\"show-full-id\""));
    let (status, full) = clerk
        .post_json(
            &format!("/api/v1/applications/{id}/personal-data"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["applicant"]["id_number"], "11010519491231002X");
    let report = state.node.store.verify_audit().unwrap().unwrap();
    assert_eq!(report.count, before + 2);
    let tail = state.node.store.audit_tail(2).unwrap();
    for e in &tail {
        assert_eq!(e.action, "personal_data.viewed");
        assert_eq!(e.user, "clerk");
        assert_eq!(e.node, "village-test");
        assert_eq!(e.case_id.as_deref(), Some(id.as_str()));
        assert!(!e.detail.contains("11010519491231002X"), "{}", e.detail);
    }
}

/// Stores at `to` a copy of case `id` of `from` under `new_id`, as item `item` accepted
/// `days_ago` calendar days ago: how a case that has waited arrives from a village.
async fn ship_backdated(
    from: &AppState,
    to: &AppState,
    id: &str,
    new_id: &str,
    item: &str,
    days_ago: u64,
) {
    let mut case = from.node.store.case(id).unwrap().unwrap();
    case.id = new_id.into();
    case.receipt_no = format!("{}-{new_id}", case.receipt_no);
    case.item_code = item.into();
    case.route = to.node.catalog.get(item).unwrap().route_steps();
    let accepted = &mut case.events[0];
    accepted.id = format!("{new_id}-accepted");
    accepted.at.wall_ms -= days_ago * 86_400_000;
    let mut doc =
        yiciban_core::case_doc::build(&case, yiciban_core::case_doc::node_actor("v")).unwrap();
    let changes = doc
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    to.node.store.apply_changes(new_id, changes).await.unwrap();
}

#[tokio::test]
async fn the_queue_and_supervision_sort_and_colour_by_deadline() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Weekends only, so the test holds whatever day it runs on.
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", &weekends_calendar(&tdir)).await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    // F: town:review 5 working days, accepted now.
    let (fresh, _) = clerk.file("MZ003").await;
    ship(&village, &town, &fresh).await;
    // A: town:review 15 working days, accepted 10 days ago (6–8 used): due after F.
    ship_backdated(&village, &town, &fresh, "case-a", "MZ001", 10).await;
    // R: town:review 1 working day, accepted 30 days ago: late.
    ship_backdated(&village, &town, &fresh, "case-r", "WJ001", 30).await;
    // Y: town:review 1 working day, accepted now: due the next working day.
    ship_backdated(&village, &town, &fresh, "case-y", "RS001", 0).await;

    let (status, q) = reviewer.get_json("/api/v1/queue").await;
    assert_eq!(status, StatusCode::OK);
    let items = q["items"].as_array().unwrap();
    let order: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap(),
                i["time"]["step_warning"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("case-r", "red"),
            ("case-y", "yellow"),
            (fresh.as_str(), "none"),
            ("case-a", "none")
        ],
        "most pressing first, not oldest first"
    );
    assert!(items.iter().all(|i| i["time"]["due"].is_string()));

    let (_, sup) = reviewer.get_json("/api/v1/supervision").await;
    let ids: Vec<&str> = sup["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["case-r", "case-y"], "red first, the rest absent");

    let (_, detail) = reviewer.get_json("/api/v1/applications/case-r").await;
    assert_eq!(detail["state"]["step_warning"], "red");
    assert_eq!(
        detail["state"]["warning"], "red",
        "3 promised days are long gone"
    );
    let due = detail["state"]["due"].as_str().unwrap();
    assert!(due < town.node.today().to_string().as_str(), "{due}");

    let (_, page) = reviewer.get("/queue").await;
    let (r, y) = (
        page.find("data-warning=\"red\"").unwrap(),
        page.find("data-warning=\"yellow\"").unwrap(),
    );
    assert!(r < y);
    assert!(page.contains("红牌：已超期"));
    let (_, page) = reviewer.get("/supervision").await;
    assert!(page.contains("/cases/case-r") && page.contains("/cases/case-y"));
    assert!(!page.contains(&format!("/cases/{fresh}")));
    let (_, page) = reviewer.get("/cases/case-r").await;
    assert!(
        page.contains("id=\"case-time\" class=\"warn-red\""),
        "{page}"
    );
}

/// The kiosk's token: `GET /rate` sets it as a cookie and as the form's hidden field.
async fn kiosk_token(state: &AppState) -> String {
    let resp = router(state.clone())
        .oneshot(Request::get("/rate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("yiciban_rate=")
        .unwrap()
        .to_string();
    let html = body_text(resp).await;
    assert!(html.contains(&format!("value=\"{token}\"")), "{html}");
    token
}

/// Posts the public rating form, with no login: `token` goes in the cookie and the field.
async fn kiosk_rate(
    state: &AppState,
    token: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut pairs = vec![("token", token)];
    pairs.extend_from_slice(fields);
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let resp = router(state.clone())
        .oneshot(
            Request::post("/rate")
                .header(header::COOKIE, format!("yiciban_rate={token}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    (status, body_text(resp).await)
}

async fn event_count(session: &Session, id: &str) -> u64 {
    let (_, detail) = session
        .get_json(&format!("/api/v1/applications/{id}"))
        .await;
    detail["state"]["event_count"].as_u64().unwrap()
}

#[tokio::test]
async fn the_kiosk_rates_with_receipt_and_phone_tail_once_the_result_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    // An immediate item: ready to issue at acceptance.
    let (id, filed) = clerk.file("YB001").await;
    let receipt = filed["receipt_no"].as_str().unwrap().to_string();
    let token = kiosk_token(&village).await;
    let rate = |tail: &'static str| {
        [
            ("receipt_no", receipt.clone()),
            ("phone_tail", tail.to_string()),
            ("level", "2".to_string()),
            ("comment", "窗口等候时间长".to_string()),
        ]
    };
    let fields = |f: &[(&'static str, String); 4]| -> Vec<(&'static str, String)> { f.to_vec() };
    let send = |f: Vec<(&'static str, String)>| {
        let village = village.clone();
        let token = token.clone();
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            kiosk_rate(&village, &token, &pairs).await
        }
    };

    // Wrong phone digits: a clear message, what was typed kept (not the digits), nothing
    // written.
    let before = event_count(&clerk, &id).await;
    let (status, html) = send(fields(&rate("1234"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    assert!(html.contains("受理编号或手机号后四位不正确"), "{html}");
    assert!(
        html.contains(&format!("value=\"{receipt}\"")),
        "receipt kept"
    );
    assert!(html.contains("窗口等候时间长"), "comment kept");
    assert!(html.contains("<option value=\"2\" selected>"), "level kept");
    assert!(!html.contains("1234"), "the phone digits are not echoed");
    assert_eq!(event_count(&clerk, &id).await, before);

    // Right digits, but the result is not handed out yet: refused, nothing written.
    let (status, html) = send(fields(&rate("8000"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("尚未办结出件"), "{html}");
    assert_eq!(event_count(&clerk, &id).await, before);

    // Without the double-submit token (another site's form): refused.
    let forged = router(village.clone())
        .oneshot(
            Request::post("/rate")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "token={token}&receipt_no={receipt}&phone_tail=8000&level=5"
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Issued: the citizen's rating is recorded as the kiosk's.
    let (status, _) = clerk
        .event(&id, serde_json::json!({"kind": "issued"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = event_count(&clerk, &id).await;
    let (status, html) = send(fields(&rate("8000"))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("感谢您的评价") && html.contains("回访"),
        "{html}"
    );
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    assert_eq!(detail["state"]["event_count"].as_u64().unwrap(), before + 1);
    let rated = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(rated["kind"], "rated");
    assert_eq!(rated["user"], "kiosk");
    assert_eq!(
        rated["payload"],
        serde_json::json!({"level": 2, "comment": "窗口等候时间长", "source": "kiosk"})
    );

    // Guessing the digits locks the receipt number, even for the right digits after.
    for tail in ["0001", "0002", "0003", "0004", "0005"] {
        let (status, _) = send(fields(&rate(tail))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, html) = send(fields(&rate("8000"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(html.contains("分钟后再试"));
}

#[tokio::test]
async fn a_clerk_enters_a_paper_rating_once_the_result_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let (id, _) = clerk.file("YB001").await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(!page.contains("id=\"action-rated\""), "not handed out yet");
    let (status, body) = clerk
        .event(&id, serde_json::json!({"kind": "rated", "level": 4}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    clerk
        .event(&id, serde_json::json!({"kind": "issued"}))
        .await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-rated\"") && page.contains("录入纸质评价"));
    assert!(page.contains("<option value=\"1\">非常不满意（1）</option>"));
    let (status, _) = clerk
        .post_form(
            &format!("/cases/{id}/events"),
            &[("kind", "rated"), ("level", "4"), ("comment", "办事快")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("满意（4）；办事快；纸质评价"), "{page}");

    // Through the API too; a level out of range or a kiosk source is refused.
    for bad in [
        serde_json::json!({"kind": "rated", "level": 9}),
        serde_json::json!({"kind": "rated"}),
        serde_json::json!({"kind": "rated", "level": 3, "source": "kiosk"}),
        serde_json::json!({"kind": "rated", "level": 3, "comment": "长".repeat(201)}),
    ] {
        let (status, body) = clerk.event(&id, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "rated", "level": "1", "comment": "态度差"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    let last = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["payload"],
        serde_json::json!({"level": 1, "comment": "态度差", "source": "paper"})
    );
    // A reviewer does not enter ratings.
    let (status, _) = Session::new(&village, "reviewer")
        .await
        .event(&id, serde_json::json!({"kind": "rated", "level": 5}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_bad_rating_opens_a_follow_up_at_the_county_until_a_county_comment_closes_it() {
    let (vdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Weekends only, so the due date is counted whatever day the test runs on.
    let village = node_state(&vdir, "village", "").await;
    let county = node_state(&cdir, "county", &weekends_calendar(&cdir)).await;
    let clerk = Session::new(&village, "clerk").await;
    let approver = Session::new(&county, "approver").await;

    let (id, _) = clerk.file("YB001").await;
    clerk
        .event(&id, serde_json::json!({"kind": "issued"}))
        .await;
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "rated", "level": 5, "comment": "很好"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "rated", "level": 1, "comment": "多跑了一趟"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    let rating_id = detail["events"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The village cannot close it: follow-ups are the county's.
    let (status, body) = clerk
        .event(
            &id,
            serde_json::json!({"kind": "comment", "text": "已回访", "follow_up": rating_id}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    ship(&village, &county, &id).await;
    let (status, list) = approver.get_json("/api/v1/followups").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["count"], 1, "the good rating opens nothing: {list}");
    let item = &list["items"][0];
    assert_eq!(item["case_id"], id.as_str());
    assert_eq!(item["rating_event_id"], rating_id.as_str());
    assert_eq!(item["level"], 1);
    assert_eq!(item["comment"], "多跑了一趟");
    assert_eq!(item["closed"], false);
    let today = county.node.today();
    let due = chrono::NaiveDate::parse_from_str(item["due"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    // Five working days on a weekends-only calendar, counted from the day after today
    // (from a Saturday that is the next Friday, six days on; from a Monday, seven).
    use chrono::Datelike;
    let mut expected = today;
    let mut working = 0;
    while working < 5 {
        expected = expected.succ_opt().unwrap();
        if !matches!(
            expected.weekday(),
            chrono::Weekday::Sat | chrono::Weekday::Sun
        ) {
            working += 1;
        }
    }
    assert_eq!(due, expected, "five working days after {today}");
    assert_eq!(item["warning"], "none");

    let (status, page) = approver.get("/followups").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!("id=\"close-{rating_id}\"")),
        "{page}"
    );
    assert!(page.contains("非常不满意（1）") && page.contains("多跑了一趟"));
    // A comment naming no follow-up of this case is refused, what was typed kept.
    let (status, page) = approver
        .post_form(
            "/followups/close",
            &[("case_id", &id), ("rating", "nope"), ("text", "已回访")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("没有该差评的回访整改"));
    let (status, page) = approver
        .post_form(
            "/followups/close",
            &[
                ("case_id", &id),
                ("rating", &rating_id),
                ("text", "已电话回访，窗口增设材料清单"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (_, list) = approver.get_json("/api/v1/followups").await;
    assert_eq!(list["count"], 0, "{list}");
    let (_, page) = approver.get("/followups").await;
    assert!(page.contains("id=\"followups-empty\""));
    let (status, body) = approver
        .event(
            &id,
            serde_json::json!({"kind": "comment", "text": "again", "follow_up": rating_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, page) = approver.get(&format!("/cases/{id}")).await;
    assert!(page.contains("差评回访整改办结；已电话回访"), "{page}");

    // Still open at the village until the closing comment arrives; no close form there.
    let (_, list) = clerk.get_json("/api/v1/followups").await;
    assert_eq!(list["count"], 1);
    let (_, page) = clerk.get("/followups").await;
    assert!(!page.contains("id=\"close-"));
    ship(&county, &village, &id).await;
    let (_, list) = clerk.get_json("/api/v1/followups").await;
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_cases_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let clerk = Session::new(&state, "clerk").await;
    clerk.file("MZ003").await;
    clerk.file("MZ003").await;
    let resp = router(state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "public, no login");
    let text = body_text(resp).await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value("yiciban_cases", Some(("status", "under_review"))),
        Some(2.0)
    );
    assert!(value("yiciban_store_bytes", None).is_some_and(|b| b > 0.0));
    assert!(value("yiciban_uptime_seconds", None).is_some());
    // The two filings were timed under their route, not their ids.
    let filed = scrape.samples.iter().find(|s| {
        s.metric == "yiciban_http_request_duration_seconds"
            && s.labels.get("route") == Some("/api/v1/applications")
            && s.labels.get("method") == Some("POST")
    });
    match filed.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().unwrap().count, 2.0)
        }
        other => panic!("no request histogram: {other:?}\n{text}"),
    }
    assert!(
        scrape
            .samples
            .iter()
            .all(|s| s.metric.starts_with("yiciban_")),
        "every name has the prefix"
    );
}

#[tokio::test]
async fn the_county_urges_a_late_case_and_the_town_sees_it() {
    let (vdir, tdir, cdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let county = node_state(&cdir, "county", &weekends_calendar(&cdir)).await;
    let clerk = Session::new(&village, "clerk").await;
    let (fresh, _) = clerk.file("MZ003").await;
    ship_backdated(&village, &county, &fresh, "case-late", "WJ001", 30).await;
    let approver = Session::new(&county, "approver").await;

    let (_, page) = approver.get("/supervision").await;
    assert!(
        page.contains("id=\"by-step\"") && page.contains("镇审核"),
        "{page}"
    );
    assert!(page.contains("action=\"/supervision/urge\""));
    let (status, body) = approver
        .post_json(
            "/api/v1/applications/case-late/urge",
            serde_json::json!({"note": "请今日办结"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, detail) = approver.get_json("/api/v1/applications/case-late").await;
    let urged: Vec<&serde_json::Value> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "urged")
        .collect();
    assert_eq!(urged.len(), 1);
    assert_eq!(urged[0]["payload"]["text"], "请今日办结");
    assert_eq!(
        detail["state"]["status"], "under_review",
        "an urge moves nothing"
    );

    // The town holding the baton receives it with the case.
    ship(&county, &town, "case-late").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let (_, page) = reviewer.get("/cases/case-late").await;
    assert!(
        page.contains("催办") && page.contains("请今日办结"),
        "{page}"
    );
    // Nobody urges away from the county, and a clerk never does.
    let (status, _) = reviewer
        .post_json("/api/v1/applications/case-late/urge", serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = clerk
        .post_json(
            &format!("/api/v1/applications/{fresh}/urge"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_queue_comes_in_pages_of_fifty_with_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    // 即办件 wait at the village to be handed out: 53 in its queue, oldest first (undated).
    let mut filed = Vec::new();
    for _ in 0..53 {
        filed.push(clerk.file("YB001").await.0);
    }
    let (status, page) = clerk.get("/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("待办 53 件"), "the count of the whole queue");
    assert_eq!(page.matches("<tr class=\"status-").count(), 50);
    assert!(page.contains("第 1–50 件（共 53 件），第 1/2 页"), "{page}");
    assert!(page.contains("href=\"/queue?page=2\""));
    assert!(page.contains(&format!("/cases/{}", filed[49])));
    assert!(!page.contains(&format!("/cases/{}", filed[50])));
    for path in ["/queue?page=2", "/queue?page=9"] {
        let (_, page) = clerk.get(path).await;
        assert_eq!(page.matches("<tr class=\"status-").count(), 3, "{path}");
        assert!(
            page.contains("第 51–53 件（共 53 件），第 2/2 页"),
            "{path}"
        );
        assert!(page.contains("href=\"/queue?page=1\""));
        assert!(page.contains(&format!("/cases/{}", filed[52])));
    }

    let (_, q) = clerk.get_json("/api/v1/queue?limit=5&offset=50").await;
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        filed[50..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        (q["total"].as_u64(), q["count"].as_u64()),
        (Some(53), Some(3))
    );
    // Handed out and picked up: it leaves the queue.
    for kind in ["issued", "picked_up"] {
        let (status, body) = clerk
            .event(&filed[0], serde_json::json!({"kind": kind}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, q) = clerk.get_json("/api/v1/queue?limit=1").await;
    assert_eq!(q["total"], 52);
    assert_eq!(q["items"][0]["id"], filed[1].as_str());
}

#[tokio::test]
async fn a_field_over_its_bound_is_422_naming_it_and_nothing_is_filed() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let clerk = Session::new(&state, "clerk").await;
    let filing = |relation: String, address: String| {
        serde_json::json!({
            "item_code": "MZ003",
            "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
            "proxy": {"name": "王五", "id_number": "11010519491231002X", "phone": "13800138001", "relation": relation},
            "form": {"birth_date": "1949-12-31", "address": address, "bank_account": "6217000000001234"},
            "materials": [
                {"key": "id_card", "status": "original"},
                {"key": "hukou_booklet", "status": "original"},
                {"key": "social_security_card", "status": "copy"},
            ],
        })
    };
    let (status, body) = clerk
        .post_json(
            "/api/v1/applications",
            filing("亲".repeat(400_000), "示范村3组".into()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("proxy.relation"), "{body}");
    assert!(body.to_string().contains("最多20字"), "{body}");
    let (status, body) = clerk
        .post_json(
            "/api/v1/applications",
            filing("儿子".into(), "村".repeat(5_000)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("address"), "{body}");
    assert_eq!(state.node.store.case_count().unwrap(), 0);
    // Within its bounds the same filing is accepted.
    let (status, body) = clerk
        .post_json(
            "/api/v1/applications",
            filing("儿子".into(), "示范村3组".into()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

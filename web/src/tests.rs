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

async fn state(dir: &tempfile::TempDir) -> AppState {
    let config_path = dir.path().join("village.toml");
    std::fs::write(dir.path().join("catalog.toml"), yiciban_core::DEMO_CATALOG).unwrap();
    std::fs::write(
        &config_path,
        r#"
[node]
id = "village-test"
role = "village"
name = "测试村"
division = "430181101001"
town_division = "430181101000"
county_division = "430181000000"
[http]
listen = "127.0.0.1:0"
[store]
path = "node.redb"
blob_max_bytes = 1024
[catalog]
path = "catalog.toml"
"#,
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let catalog = Catalog::load(&config.catalog_path()).unwrap();
    let store = Store::open(&config.store_path(), 64, config.store.blob_max_bytes).unwrap();
    let node = Node::new(config, catalog, store).unwrap();
    node.add_user("clerk", "受理员", Role::Clerk, "password-1")
        .await
        .unwrap();
    AppState::new(node)
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Logs in through the API; returns the cookie header and the CSRF token.
async fn login(state: &AppState) -> (String, String) {
    let resp = router(state.clone())
        .oneshot(
            Request::post("/api/v1/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"username":"clerk","password":"password-1"}"#,
                ))
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

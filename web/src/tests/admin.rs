//! The security admin's console at the county: directory users, enrolment tokens,
//! revocation (`/admin/…`, `/api/v1/nodes/{id}/users`, `/api/v1/tokens`).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use yiciban_core::users::Role;

use super::{AppState, Session, county_tls, node_state};

const VILLAGE: &str = "village-1";
const DIVISION: &str = "430181101001";

/// A county node with its CA and a security admin `sec` (password `password-1`).
async fn county(dir: &tempfile::TempDir) -> AppState {
    county_tls(dir, &[]);
    let state = node_state(dir, "county", "").await;
    state
        .node
        .add_user("sec", "安全管理员", Role::SecurityAdmin, "password-1")
        .await
        .unwrap();
    state
        .node
        .add_user("admin", "系统管理员", Role::CountyAdmin, "password-1")
        .await
        .unwrap();
    state
}

async fn issue(sec: &Session) -> String {
    let (status, body) = sec
        .post_json(
            "/api/v1/tokens",
            json!({"node_id": VILLAGE, "role": "village", "division": DIVISION, "days": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_string()
}

fn directory(state: &AppState) -> Vec<yiciban_core::users::User> {
    state
        .node
        .store
        .user_dir(VILLAGE)
        .unwrap()
        .map(|d| d.users)
        .unwrap_or_default()
}

#[tokio::test]
async fn the_security_admin_issues_a_token_and_manages_the_nodes_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = county(&dir).await;
    let sec = Session::new(&state, "sec").await;

    // The nav offers 用户与节点 to the security admin only.
    let (_, page) = sec.get("/nodes").await;
    assert!(page.contains(r#"href="/admin/enrol""#), "{page}");
    let approver = Session::new(&state, "approver").await;
    let (_, page) = approver.get("/nodes").await;
    assert!(!page.contains(r#"href="/admin/enrol""#));

    // A token: shown once, then listed as pending without its secret.
    let token = issue(&sec).await;
    let (status, list) = sec.get_json("/api/v1/tokens").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 1);
    assert_eq!(list["tokens"][0]["node_id"], VILLAGE);
    assert_eq!(list["tokens"][0]["state"], "pending");
    assert!(!list.to_string().contains(token.split('.').nth(1).unwrap()));
    let (_, page) = sec.get("/admin/enrol").await;
    assert!(
        page.contains(&format!(r#"data-node="{VILLAGE}" data-state="pending""#)),
        "{page}"
    );
    // The page form too; a bad division keeps what was typed.
    let (status, page) = sec
        .post_form(
            "/admin/enrol",
            &[
                ("node_id", "town-9"),
                ("role", "town"),
                ("division", "12"),
                ("days", "7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains(r#"value="town-9""#), "{page}");
    let (status, page) = sec
        .post_form(
            "/admin/enrol",
            &[
                ("node_id", "town-9"),
                ("role", "town"),
                ("division", "430181102000"),
                ("days", "3"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"id="token-issued""#), "{page}");

    // A directory user through the API: in the directory document, and on the page.
    let (status, body) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users"),
            json!({"username": "li.wei", "display_name": "李伟", "role": "clerk", "password": "password-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"], "clerk");
    assert!(body.get("password_hash").is_none());
    let users = directory(&state);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].display_name, "李伟");
    assert!(yiciban_core::users::verify_password(
        &users[0].password_hash,
        "password-2"
    ));
    let (_, page) = sec.get(&format!("/admin/nodes/{VILLAGE}")).await;
    assert!(page.contains(r#"data-user="li.wei""#), "{page}");
    assert!(page.contains("李伟"));
    let (status, body) = sec
        .get_json(&format!("/api/v1/nodes/{VILLAGE}/users"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["users"][0]["username"], "li.wei");
    assert_eq!(body["division"], DIVISION);
    // The same name again, an admin role, an unknown node: refused.
    let (status, _) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users"),
            json!({"username": "li.wei", "role": "clerk", "password": "password-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users"),
            json!({"username": "boss", "role": "security_admin", "password": "password-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sec
        .post_json(
            "/api/v1/nodes/nobody/users",
            json!({"username": "x1", "role": "clerk", "password": "password-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(directory(&state).len(), 1);

    // The page form: passwords that differ keep what was typed and write nothing.
    let add = format!("/admin/nodes/{VILLAGE}/users");
    let (status, page) = sec
        .post_form(
            &add,
            &[
                ("username", "zhang"),
                ("display_name", "张三"),
                ("role", "reviewer"),
                ("password", "password-3"),
                ("password2", "password-4"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("两次输入的密码不一致"), "{page}");
    assert!(page.contains(r#"value="zhang""#) && page.contains(r#"value="张三""#));
    assert!(page.contains(r#"value="reviewer" selected"#), "{page}");
    assert!(!page.contains("password-3"));
    assert_eq!(directory(&state).len(), 1);
    let (status, _) = sec
        .post_form(
            &add,
            &[
                ("username", "zhang"),
                ("display_name", "张三"),
                ("role", "reviewer"),
                ("password", "password-3"),
                ("password2", "password-3"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(directory(&state).len(), 2);

    // Reset a password, disable and enable.
    let (status, body) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users/li.wei/password"),
            json!({"password": "password-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let li = |state: &AppState| {
        directory(state)
            .into_iter()
            .find(|u| u.username == "li.wei")
            .unwrap()
    };
    assert!(yiciban_core::users::verify_password(
        &li(&state).password_hash,
        "password-9"
    ));
    let (status, _) = sec
        .post_form(&format!("/admin/nodes/{VILLAGE}/users/li.wei/disable"), &[])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(li(&state).disabled);
    let (_, page) = sec.get(&format!("/admin/nodes/{VILLAGE}")).await;
    assert!(
        page.contains(r#"data-user="li.wei" data-disabled="true""#),
        "{page}"
    );
    let (status, body) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users/li.wei/enable"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["disabled"], false);
    assert!(!li(&state).disabled);
    let (status, _) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/users/nobody/disable"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_csrf_and_other_roles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = county(&dir).await;
    let sec = Session::new(&state, "sec").await;
    issue(&sec).await;
    let body = json!({"username": "li.wei", "role": "clerk", "password": "password-2"});
    let path = format!("/api/v1/nodes/{VILLAGE}/users");

    // Another token than the session's, or none: refused, nothing written.
    let (status, text) = sec
        .send(
            Request::post(&path)
                .header(header::COOKIE, &sec.cookie)
                .header("x-csrf-token", "0".repeat(64))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("\"error\":\"csrf\""), "{text}");
    for form in [
        "username=li.wei&role=clerk&password=password-2&password2=password-2".to_string(),
        format!("csrf=wrong&confirm={VILLAGE}"),
    ] {
        for page in ["users", "revoke"] {
            let (status, _) = sec
                .send(
                    Request::post(format!("/admin/nodes/{VILLAGE}/{page}"))
                        .header(header::COOKIE, &sec.cookie)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Body::from(form.clone()))
                        .unwrap(),
                )
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        }
    }
    assert!(directory(&state).is_empty());

    // A clerk, an approver and the county admin (系统管理员) manage no users or nodes.
    for name in ["clerk", "approver", "admin"] {
        let s = Session::new(&state, name).await;
        let (status, _) = s.post_json(&path, body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
        let (status, _) = s
            .post_json(
                "/api/v1/tokens",
                json!({"node_id": "v9", "role": "village", "division": DIVISION}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
        for page in [format!("/admin/nodes/{VILLAGE}"), "/admin/enrol".into()] {
            let (status, _) = s.get(&page).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name} {page}");
        }
        let (status, _) = s
            .post_form(
                &format!("/admin/nodes/{VILLAGE}/revoke"),
                &[("confirm", VILLAGE)],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}");
    }
    assert!(directory(&state).is_empty());
    assert!(state.node.revoked_nodes().is_empty());
}

#[tokio::test]
async fn an_enrolled_node_is_revoked_from_the_console_and_listed_as_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let state = county(&dir).await;
    let sec = Session::new(&state, "sec").await;
    let token = issue(&sec).await;

    // The village enrols as `yiciban enroll` does.
    let key = yiciban_transport::identity::NodeKey::generate().unwrap();
    let req = yiciban_core::enrol::request(&token, &key).unwrap();
    let (status, text) = sec
        .send(
            Request::post("/api/v1/enroll")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&req).unwrap()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, list) = sec.get_json("/api/v1/tokens").await;
    assert_eq!(list["tokens"][0]["state"], "used");
    let (_, page) = sec.get("/admin/enrol").await;
    assert!(
        page.contains(&format!(r#"data-node="{VILLAGE}" data-revoked="false""#)),
        "{page}"
    );
    let (_, nodes) = sec.get_json("/api/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["node"], VILLAGE);
    assert_eq!(nodes["nodes"][0]["revoked"], false);
    assert_eq!(nodes["refused"], json!([]));
    let (_, page) = sec.get("/nodes").await;
    assert!(
        page.contains(&format!(r#"<a href="/admin/nodes/{VILLAGE}">"#)),
        "{page}"
    );

    // Without the confirmation: refused, what was typed kept, nothing revoked.
    let crl = dir.path().join("tls/crl.der");
    let before = std::fs::read(&crl).unwrap();
    let revoke = format!("/admin/nodes/{VILLAGE}/revoke");
    let (status, page) = sec.post_form(&revoke, &[("confirm", "village-")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains(r#"value="village-""#), "{page}");
    assert!(state.node.revoked_nodes().is_empty());
    assert_eq!(std::fs::read(&crl).unwrap(), before);

    let (status, _) = sec.post_form(&revoke, &[("confirm", VILLAGE)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(state.node.revoked_nodes().contains(VILLAGE));
    assert_ne!(std::fs::read(&crl).unwrap(), before, "crl.der rewritten");
    let audit = state.node.store.audit_tail(5).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "node.revoked" && e.user == "sec" && e.detail.contains(VILLAGE))
    );
    // Again through the API: nothing more to revoke.
    let (status, body) = sec
        .post_json(
            &format!("/api/v1/nodes/{VILLAGE}/revoke"),
            json!({"confirm": VILLAGE}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 0);
    let (status, _) = sec
        .post_json("/api/v1/nodes/nobody/revoke", json!({"confirm": "nobody"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The console lists it as revoked, and the refusal of its next handshake.
    state
        .node
        .links
        .record_refusal(VILLAGE, "certificate revoked");
    let (_, nodes) = sec.get_json("/api/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["revoked"], true);
    assert_eq!(nodes["refused"][0]["node"], VILLAGE);
    let (_, page) = sec.get("/nodes").await;
    assert!(page.contains(r#"data-revoked="true""#), "{page}");
    assert!(page.contains("证书已吊销") && page.contains("证书已被县级吊销"));
    let (_, page) = sec.get(&format!("/admin/nodes/{VILLAGE}")).await;
    assert!(page.contains(r#"id="node-revoked""#), "{page}");
    let (_, list) = sec.get_json("/api/v1/tokens").await;
    assert_eq!(list["tokens"][0]["revoked"], true);
    let approver = Session::new(&state, "approver").await;
    let (_, page) = approver.get("/nodes").await;
    assert!(page.contains("证书已吊销"));
    assert!(
        !page.contains(r#"<a href="/admin/nodes/"#),
        "no link without the role"
    );
}

#[tokio::test]
async fn the_admin_console_is_the_countys_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = node_state(&dir, "village", "").await;
    state
        .node
        .add_user("sec", "安全管理员", Role::SecurityAdmin, "password-1")
        .await
        .unwrap();
    let sec = Session::new(&state, "sec").await;
    let (status, _) = sec.get("/admin/enrol").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = sec
        .post_json(
            "/api/v1/tokens",
            json!({"node_id": "v9", "role": "village", "division": DIVISION}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = sec.get("/catalog").await;
    assert!(!page.contains(r#"href="/admin/enrol""#));
}

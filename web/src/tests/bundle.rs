//! 一件事 bundles (one form, one sub-case per item, one hand-out) and 当场办结 of 即办件.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Session, multipart, node_state, ship};

/// The 老年人一件事 of the demo catalogue (LL001 + MZ003) with `form` as the one form.
fn elderly(form: Value) -> Value {
    json!({
        "bundle": "YJS-LNR",
        "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
        "form": form,
        "materials": [
            {"key": "id_card", "status": "original"},
            {"key": "photo", "status": "original"},
            {"key": "hukou_booklet", "status": "original"},
            {"key": "social_security_card", "status": "copy"},
        ],
    })
}

fn good_form() -> Value {
    json!({
        "birth_date": "1939-12-31",
        "address": "示范村3组",
        "hukou_type": "本市户籍",
        "bank_account": "6217000000001234",
    })
}

/// Files the elderly bundle; returns the bundle id and the sub-cases' ids.
async fn file_elderly(clerk: &Session) -> (String, Vec<String>) {
    let (status, body) = clerk
        .post_json("/api/v1/bundles", elderly(good_form()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ids = body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    (body["bundle_id"].as_str().unwrap().to_string(), ids)
}

#[tokio::test]
async fn a_bundle_is_one_form_and_one_sub_case_per_item_with_a_shared_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;

    // The catalogue offers the bundle; its form shows each shared field once.
    let (_, page) = clerk.get("/catalog").await;
    assert!(page.contains("href=\"/apply-bundle/YJS-LNR\""), "{page}");
    let (status, page) = clerk.get("/apply-bundle/YJS-LNR").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("老年人优待证办理") && page.contains("高龄津贴申领"));
    assert_eq!(page.matches("name=\"form.address\"").count(), 1);
    assert_eq!(page.matches("name=\"form.birth_date\"").count(), 1);
    assert_eq!(page.matches("name=\"material.id_card\"").count(), 1);
    assert!(
        page.contains("name=\"form.hukou_type\"") && page.contains("name=\"form.bank_account\"")
    );

    let (status, body) = clerk
        .post_json("/api/v1/bundles", elderly(good_form()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bundle_id = body["bundle_id"].as_str().unwrap();
    let cases = body["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0]["item_code"], "LL001");
    assert_eq!(cases[1]["item_code"], "MZ003");
    assert_ne!(cases[0]["receipt_no"], cases[1]["receipt_no"]);
    let ids: Vec<&str> = cases.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(bundle_id, ids[0], "a bundle's id is its first sub-case's");
    assert_eq!(village.node.store.case_count().unwrap(), 2);
    for c in cases {
        assert_eq!(c["state"]["status"], "under_review");
        let (_, detail) = clerk
            .get_json(&format!(
                "/api/v1/applications/{}",
                c["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(detail["bundle"]["id"], bundle_id);
        assert_eq!(detail["bundle"]["code"], "YJS-LNR");
        assert_eq!(detail["bundle"]["case_ids"], json!(ids));
        // Each sub-case holds its own item's part of the one form.
        assert_eq!(detail["form"]["address"], "示范村3组");
    }
    let (_, ll) = clerk
        .get_json(&format!("/api/v1/applications/{}", ids[0]))
        .await;
    assert!(ll["form"].get("bank_account").is_none());
    assert_eq!(ll["form"]["hukou_type"], "本市户籍");

    // Any sub-case finds the bundle.
    let (status, view) = clerk.get_json(&format!("/api/v1/bundles/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["bundle_id"], bundle_id);
    assert_eq!(view["cases"].as_array().unwrap().len(), 2);
    assert_eq!(view["can_issue"], false);
    let (status, page) = clerk.get(&format!("/bundles/{bundle_id}")).await;
    assert_eq!(status, StatusCode::OK);
    for c in cases {
        assert!(page.contains(c["receipt_no"].as_str().unwrap()));
    }
    assert!(page.contains("id=\"bundle-wait\"") && !page.contains("action-bundle-issue"));
    let (_, page) = clerk.get(&format!("/cases/{}", ids[1])).await;
    assert!(
        page.contains(&format!("href=\"/bundles/{bundle_id}\"")),
        "{page}"
    );
    // A case filed alone is no bundle.
    let (id, _) = clerk.file("MZ003").await;
    let (status, _) = clerk.get_json(&format!("/api/v1/bundles/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_bundle_is_422_by_field_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let mut form = good_form();
    form["birth_date"] = json!("1939-13-01");
    form.as_object_mut().unwrap().remove("hukou_type");
    form["no_such_field"] = json!("x");
    let (status, body) = clerk.post_json("/api/v1/bundles", elderly(form)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = body["fields"].as_object().unwrap();
    for key in ["form.birth_date", "form.hukou_type", "form.no_such_field"] {
        assert!(fields.contains_key(key), "{key}: {body}");
    }
    let (status, body) = clerk
        .post_json("/api/v1/bundles", json!({"bundle": "NOPE"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["fields"].get("bundle").is_some());
    assert_eq!(village.node.store.case_count().unwrap(), 0);

    // The page keeps what was typed and shows every problem.
    let boundary = "XyZ";
    let body = multipart(
        boundary,
        &[
            ("csrf", clerk.csrf.as_str()),
            ("applicant.name", "王𠈌"),
            ("applicant.id_number", "11010519491231002X"),
            ("applicant.phone", "13800138000"),
            ("form.address", "示范村3组"),
        ],
        None,
    );
    let (status, page) = clerk
        .send(
            axum::http::Request::post("/apply-bundle/YJS-LNR")
                .header(axum::http::header::COOKIE, &clerk.cookie)
                .header(
                    axum::http::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("示范村3组") && page.contains("value=\"王𠈌\""));
    assert!(page.contains("缺少必需材料") && page.contains("data-field=\"form.hukou_type\""));
    assert_eq!(village.node.store.case_count().unwrap(), 0);
}

#[tokio::test]
async fn a_bundle_is_handed_out_once_when_every_sub_case_is_ready() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", "").await;
    let town = node_state(&tdir, "town", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;
    let (bundle_id, ids) = file_elderly(&clerk).await;

    // The town passes the first item only.
    for id in &ids {
        ship(&village, &town, id).await;
    }
    let (status, body) = reviewer
        .event(&ids[0], json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ship(&town, &village, &ids[0]).await;
    let (_, page) = clerk.get(&format!("/cases/{}", ids[0])).await;
    assert!(
        !page.contains("id=\"action-issued\""),
        "a sub-case is handed out with its bundle"
    );
    let (status, body) = clerk
        .post_json(&format!("/api/v1/bundles/{bundle_id}/issue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("1个子办件未办结")
    );
    let (_, first) = clerk
        .get_json(&format!("/api/v1/applications/{}", ids[0]))
        .await;
    assert_eq!(
        first["state"]["status"], "ready_to_issue",
        "nothing written"
    );
    let (status, page) = clerk
        .post_form(
            &format!("/bundles/{bundle_id}/issue"),
            &[("note", "一次领取")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("id=\"flash\"") && page.contains("一次领取"));

    // Once the second is passed too, one hand-out issues both.
    let (status, body) = reviewer
        .event(&ids[1], json!({"kind": "review_passed"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ship(&town, &village, &ids[1]).await;
    let (_, view) = clerk
        .get_json(&format!("/api/v1/bundles/{bundle_id}"))
        .await;
    assert_eq!(view["can_issue"], true, "{view}");
    let (_, page) = clerk.get(&format!("/bundles/{bundle_id}")).await;
    assert!(page.contains("id=\"action-bundle-issue\""), "{page}");
    let (status, _) = clerk
        .post_form(
            &format!("/bundles/{bundle_id}/issue"),
            &[("note", "一次领取")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    for id in &ids {
        let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
        assert_eq!(detail["state"]["status"], "issued", "{detail}");
    }
    let (status, body) = clerk
        .post_json(&format!("/api/v1/bundles/{bundle_id}/issue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "handed out once: {body}");
    // The town holds no baton to hand out with.
    let (status, _) = Session::new(&town, "reviewer")
        .await
        .post_json(&format!("/api/v1/bundles/{bundle_id}/issue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_immediate_item_is_settled_at_the_counter_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    let (id, _) = clerk.file("YB001").await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(page.contains("id=\"action-counter\""), "{page}");
    let (status, _) = clerk.post_form(&format!("/cases/{id}/counter"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, detail) = clerk.get_json(&format!("/api/v1/applications/{id}")).await;
    assert_eq!(detail["state"]["status"], "completed", "{detail}");
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "issued", "picked_up"]);
    let (status, page) = clerk.get(&format!("/cases/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("领取时间"));

    let (id, _) = clerk.file("YB001").await;
    let (status, body) = clerk
        .post_json(&format!("/api/v1/applications/{id}/counter"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"]["status"], "completed");
    let (status, _) = clerk
        .post_json(&format!("/api/v1/applications/{id}/counter"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "once only");
    // A promised item goes through review; no counter settlement.
    let (id, _) = clerk.file("MZ003").await;
    let (_, page) = clerk.get(&format!("/cases/{id}")).await;
    assert!(!page.contains("id=\"action-counter\""));
    let (status, _) = clerk
        .post_json(&format!("/api/v1/applications/{id}/counter"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

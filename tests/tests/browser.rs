//! A real headless Chromium (Debian's `chromium` and `chromedriver`) logs in, files an
//! application through the form (first with a wrong check digit, which must keep what was
//! typed), prints the receipt and finds the case in the list.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use yiciban_tests::{DEMO_PASSWORD, NodeProcess, free_base_port};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = free_base_port().unwrap();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: scripts/test.sh installs Debian's chromium-driver");
    let driver = Driver(driver);
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--disable-quic", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The value the browser holds in an input now.
async fn value_of(c: &Client, id: &str) -> Option<String> {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
}

async fn type_into(c: &Client, id: &str, text: &str) {
    let el = c.find(Locator::Id(id)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_files_an_application_in_chromium_and_finds_it_in_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::village(&dir.path().join("node"), free_base_port().unwrap()).unwrap();
    let (_driver, c) = browser(&dir.path().join("profile")).await;
    let base = &node.base_url;

    c.goto(&format!("{base}/login")).await.unwrap();
    type_into(&c, "username", "clerk").await;
    type_into(&c, "password", DEMO_PASSWORD).await;
    click(&c, "login").await;
    c.wait()
        .for_element(Locator::Css("a[href='/catalog']"))
        .await
        .unwrap();

    c.goto(&format!("{base}/apply/MZ003")).await.unwrap();
    let name = "欧阳𠈌"; // a rare character outside the BMP
    type_into(&c, "applicant.name", name).await;
    type_into(&c, "applicant.id_number", "110105194912310021").await; // wrong check digit
    type_into(&c, "applicant.phone", "13800138000").await;
    type_into(&c, "form.address", "浏阳市集里街道示范村3组").await;
    type_into(&c, "form.bank_account", "6217000000001234").await;
    c.execute(
        "document.getElementById('form.birth_date').value = '1949-12-31';",
        vec![],
    )
    .await
    .unwrap();
    for (key, status) in [
        ("id_card", "original"),
        ("hukou_booklet", "original"),
        ("social_security_card", "copy"),
    ] {
        c.find(Locator::Id(&format!("material.{key}")))
            .await
            .unwrap()
            .select_by_value(status)
            .await
            .unwrap();
    }
    click(&c, "submit-application").await;

    // Refused: the field is named, and what was typed is still there.
    let error = c
        .wait()
        .for_element(Locator::Css("[data-field='applicant.id_number']"))
        .await
        .unwrap();
    assert!(error.text().await.unwrap().contains("校验位"));
    let kept = value_of(&c, "applicant.name").await;
    assert_eq!(kept.as_deref(), Some(name));
    let kept = value_of(&c, "form.address").await;
    assert_eq!(kept.as_deref(), Some("浏阳市集里街道示范村3组"));

    // Lower-case x is accepted and normalised.
    type_into(&c, "applicant.id_number", "11010519491231002x").await;
    click(&c, "submit-application").await;
    let receipt = c
        .wait()
        .for_element(Locator::Id("receipt-no"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(receipt.starts_with("430181101001-"), "{receipt}");
    assert!(
        c.source().await.unwrap().contains("<svg"),
        "the receipt carries a QR code"
    );

    c.goto(&format!("{base}/cases?q={name}")).await.unwrap();
    let list = c
        .wait()
        .for_element(Locator::Id("case-list"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains(&receipt), "{list}");
    assert!(
        list.contains(name),
        "the rare character is shown intact: {list}"
    );
    assert!(
        list.contains("1101**********002X"),
        "ID numbers are masked in lists: {list}"
    );
    c.close().await.unwrap();
}

/// The county console in Chromium: the admin logs in at the demo's county, opens the node
/// table and finds the village's row with its figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_county_console_shows_the_villages_row_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let base_port = free_base_port().unwrap();
    let mut demo = NodeProcess::demo(&dir.path().join("demo"), base_port).unwrap();
    let (_driver, c) = browser(&dir.path().join("profile")).await;
    let base = format!("http://127.0.0.1:{base_port}");

    c.goto(&format!("{base}/login")).await.unwrap();
    type_into(&c, "username", "admin").await;
    type_into(&c, "password", DEMO_PASSWORD).await;
    click(&c, "login").await;
    c.wait()
        .for_element(Locator::Css("a[href='/nodes']"))
        .await
        .unwrap();
    // Reports arrive every few seconds: reload until the village has reported.
    let row = Locator::Css("tr[data-node='village-430181101001']");
    let started = Instant::now();
    let text = loop {
        c.goto(&format!("{base}/nodes")).await.unwrap();
        if let Ok(el) = c.find(row).await {
            let text = el.text().await.unwrap();
            if text.contains("秒前") {
                break text;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no village row in the console"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(text.contains("430181101001"), "{text}");
    assert!(
        c.find(Locator::Css(
            "tr[data-node='village-430181101001'] svg.spark"
        ))
        .await
        .is_ok(),
        "the backlog sparkline is drawn"
    );
    c.close().await.unwrap();
    demo.terminate().unwrap();
}

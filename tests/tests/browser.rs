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

/// Types `text` into an input. ChromeDriver types only characters of the Basic Multilingual
/// Plane; a name with a rarer character (𠈌) is set as the input's value by script instead.
async fn type_into(c: &Client, id: &str, text: &str) {
    let el = c.find(Locator::Id(id)).await.unwrap();
    el.clear().await.unwrap();
    if text.chars().all(|ch| u32::from(ch) <= 0xFFFF) {
        el.send_keys(text).await.unwrap();
    } else {
        let el = serde_json::to_value(&el).unwrap();
        c.execute("arguments[0].value = arguments[1];", vec![el, json!(text)])
            .await
            .unwrap();
    }
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

/// Stretches of English a person would read as a sentence: three or more words of Latin
/// letters in a row. Codes, numbers, single product names (`yiciban`, `CSV`) and two-word
/// commands pass.
fn english_sentences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    let flush = |words: &mut Vec<&str>, found: &mut Vec<String>| {
        if words.len() >= 3 {
            found.push(words.join(" "));
        }
        words.clear();
    };
    // Split on everything but letters and the punctuation that joins words in a sentence.
    let mut start = None;
    for (i, ch) in text.char_indices().chain([(text.len(), '\n')]) {
        let letter = ch.is_ascii_alphabetic();
        match (letter, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let word = &text[s..i];
                start = None;
                // A word glued to digits or symbols (`v1`, `id_card`) is a code, not prose.
                let glued = matches!(ch, '0'..='9' | '_' | '/' | '.' | '=' | ':' | '-')
                    || text[..s].ends_with(|c: char| c.is_ascii_digit() || "_/.=:-".contains(c));
                if word.len() >= 2 && !glued {
                    words.push(word);
                    if matches!(ch, ' ' | ',' | '\'') {
                        continue;
                    }
                }
                flush(&mut words, &mut found);
            }
            (false, None) if !matches!(ch, ' ') => flush(&mut words, &mut found),
            _ => {}
        }
    }
    found
}

#[test]
fn the_english_finder_finds_sentences_and_passes_codes() {
    assert_eq!(
        english_sentences("最近错误：dial: no handshake within 10s"),
        ["no handshake within"]
    );
    assert_eq!(
        english_sentences("Failed to deserialize form body"),
        ["Failed to deserialize form body"]
    );
    assert!(english_sentences("请运行 yiciban enroll · MZ003 · id_card · CSV 导出").is_empty());
    assert!(english_sentences("village-430181101001 · 2026-12-07 · YCB1.abc").is_empty());
}

/// Every page a clerk (village), a reviewer (town) and a county admin (county) can reach from
/// their pages, in Chromium, with cases in every state, a refused form, a page that does not
/// exist and a link that is down: no English sentence anywhere a person reads. (The API's
/// JSON carries English beside the Chinese; it is not a page.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_the_clerk_the_reviewer_and_the_county_admin_reads_in_chinese() {
    use yiciban_tests::Api;
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let base_port = free_base_port().unwrap();
    let mut demo = NodeProcess::demo(&demo_dir, base_port).unwrap();
    let url = |n: u16| format!("http://127.0.0.1:{}", base_port + n);
    let (county, town, village) = (url(0), url(1), url(2));

    // Cases in several states: passed and handed out with a bad rating, waiting for a
    // supplement, under review, and a refused event.
    let clerk = Api::login(&village, "clerk", DEMO_PASSWORD).await.unwrap();
    let reviewer = Api::login(&town, "reviewer", DEMO_PASSWORD).await.unwrap();
    let catalog = yiciban_core::catalog::Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )
    .unwrap();
    let mut workload = yiciban_tests::workload::Workload::new(11);
    let mut ids = Vec::new();
    for item in ["MZ003", "MZ001", "LL001"] {
        let body = workload.application(catalog.get(item).unwrap());
        let (status, filed) = clerk.post("/api/v1/applications", &body).await.unwrap();
        assert_eq!(status, 201, "{filed}");
        ids.push(filed["id"].as_str().unwrap().to_string());
    }
    let started = Instant::now();
    while !reviewer
        .get(&format!("/api/v1/applications/{}", ids[1]))
        .await
        .is_ok_and(|(s, _)| s == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the town never got the cases"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let event = async |api: &Api, id: &str, body: serde_json::Value| {
        api.post(&format!("/api/v1/applications/{id}/events"), &body)
            .await
            .unwrap()
    };
    event(&reviewer, &ids[0], json!({"kind": "review_passed"})).await;
    event(
        &reviewer,
        &ids[1],
        json!({"kind": "supplement_requested", "materials": ["户口簿"]}),
    )
    .await;
    // Refused (not the village's to pass): leaves a superseded-free 409.
    let (status, _) = event(&clerk, &ids[2], json!({"kind": "issued"})).await;
    assert_eq!(status, 409);
    let started = Instant::now();
    loop {
        let (_, body) = clerk
            .get(&format!("/api/v1/applications/{}", ids[0]))
            .await
            .unwrap();
        if body["state"]["status"] == "ready_to_issue" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    event(&clerk, &ids[0], json!({"kind": "issued"})).await;
    event(
        &clerk,
        &ids[0],
        json!({"kind": "rated", "level": 1, "comment": "多跑了一趟"}),
    )
    .await;

    let (_driver, c) = browser(&dir.path().join("profile")).await;
    let mut problems: Vec<String> = Vec::new();
    for (base, user) in [(&village, "clerk"), (&town, "reviewer"), (&county, "admin")] {
        c.goto(&format!("{base}/login")).await.unwrap();
        problems.extend(read_page(&c, &format!("{base}/login")).await);
        type_into(&c, "username", user).await;
        type_into(&c, "password", DEMO_PASSWORD).await;
        click(&c, "login").await;
        c.wait()
            .for_element(Locator::Css("a[href='/catalog']"))
            .await
            .unwrap();
        problems.extend(walk(&c, base, 120).await);
        // A page that does not exist, a code that does not verify, a form this build
        // cannot read.
        for path in [
            "/no-such-page",
            "/verify?p=YCB1.not-a-code",
            "/queue?page=x",
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            problems.extend(read_page(&c, &format!("{base}{path}")).await);
        }
        c.execute(
            "const f = document.createElement('form'); f.method = 'post'; \
             f.action = '/supervision/urge'; f.enctype = 'text/plain'; \
             const i = document.createElement('input'); i.name = 'x'; i.value = 'y'; \
             f.appendChild(i); document.body.appendChild(f); f.submit();",
            vec![],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems.extend(read_page(&c, &format!("{base} (a form it cannot read)")).await);
        c.delete_all_cookies().await.unwrap();
    }

    // The county stops: the village's link goes down and says why.
    demo.terminate().unwrap();
    let _village = NodeProcess::serve(&demo_dir.join("village.toml"), base_port + 2).unwrap();
    c.goto(&format!("{village}/login")).await.unwrap();
    type_into(&c, "username", "clerk").await;
    type_into(&c, "password", DEMO_PASSWORD).await;
    click(&c, "login").await;
    let started = Instant::now();
    let link = loop {
        c.goto(&format!("{village}/cases")).await.unwrap();
        let text = c
            .find(Locator::Id("link-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("最近错误") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no link error shown: {text}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    problems.extend(
        english_sentences(&link)
            .into_iter()
            .map(|s| format!("{village} link state: {s:?} in {link:?}")),
    );
    c.close().await.unwrap();
    assert!(
        problems.is_empty(),
        "English on pages:\n{}",
        problems.join("\n")
    );
}

/// The English sentences of the page shown now, each with where it was.
async fn read_page(c: &Client, at: &str) -> Vec<String> {
    let text = match c.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => c.source().await.unwrap_or_default(),
    };
    english_sentences(&text)
        .into_iter()
        .map(|s| format!("{at}: {s:?}"))
        .collect()
}

/// Visits every page reachable by links from the home page (same node, no downloads, API,
/// static files or photos), at most `max`, and returns the English found on them.
async fn walk(c: &Client, base: &str, max: usize) -> Vec<String> {
    let skip = [
        "/static/",
        "/blobs/",
        "/api/",
        "/metrics",
        "/stats.csv",
        "/logout",
    ];
    let mut queue = std::collections::VecDeque::from(["/".to_string()]);
    let mut seen: std::collections::BTreeSet<String> = queue.iter().cloned().collect();
    let mut problems = Vec::new();
    let mut visited = 0;
    while let Some(path) = queue.pop_front() {
        if visited >= max {
            break;
        }
        visited += 1;
        c.goto(&format!("{base}{path}")).await.unwrap();
        problems.extend(read_page(c, &format!("{base}{path}")).await);
        for a in c
            .find_all(Locator::Css("a[href]"))
            .await
            .unwrap_or_default()
        {
            let Ok(Some(href)) = a.attr("href").await else {
                continue;
            };
            let href = href.split('#').next().unwrap_or_default().to_string();
            if href.starts_with('/')
                && !skip.iter().any(|s| href.starts_with(s))
                && seen.insert(href.clone())
            {
                queue.push_back(href);
            }
        }
    }
    eprintln!("{base}: {visited} pages read");
    assert!(visited > 10, "{base}: only {visited} pages reached");
    problems
}

//! 统计分析: `GET /stats` (every breakdown as a server-drawn SVG bar chart and a table) and
//! `GET /stats.csv?table=NAME` (each table as CSV for Excel). The numbers come from
//! [`yiciban_core::stats`]; the JSON form is `GET /api/v1/stats`.

use crate::extract::Query;
use askama::Template;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use yiciban_core::message::Msg;
use yiciban_core::stats::{self, Count, Stats};

use super::{Chrome, PageResult, page};
use crate::AppState;
use crate::authz::Action;
use crate::chart::{self, Bar};
use crate::error::AppError;
use crate::session::Auth;

/// The tables, by the name `?table=` takes, with their titles.
pub const TABLES: [(&str, &str); 7] = [
    ("by_item", "按事项"),
    ("by_village", "按村（社区）"),
    ("by_town", "按乡镇（街道）"),
    ("by_month", "按受理月份"),
    ("by_status", "按办理状态"),
    ("by_step", "各环节平均用时"),
    ("satisfaction", "好差评"),
];

/// One table of the statistics: what the page shows under its chart and the CSV holds.
/// An empty cell is a figure that cannot be given (a rate of nothing).
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    pub title: &'static str,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// The statistics of this node, from the counters its store keeps.
pub async fn gather(state: &AppState) -> Result<Stats, AppError> {
    Ok(stats::gather(&state.node).await?)
}

/// `0.9333` → `93.3`; nothing → empty.
fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}", r * 100.0))
        .unwrap_or_default()
}

const COUNT_HEADER: [&str; 5] = ["办件数", "已办结", "按时办结", "超期办结", "按时办结率(%)"];

fn count_cells(c: &Count) -> Vec<String> {
    vec![
        c.cases.to_string(),
        c.decided.to_string(),
        c.on_time.to_string(),
        c.late.to_string(),
        percent(c.on_time_rate),
    ]
}

/// Rows of a breakdown: the key (and the name, when it differs from the key), then the counts.
fn count_rows(rows: &[Count], with_name: bool) -> Vec<Vec<String>> {
    rows.iter()
        .map(|c| {
            let mut row = vec![c.key.clone()];
            if with_name {
                row.push(c.name.clone());
            }
            row.extend(count_cells(c));
            row
        })
        .collect()
}

fn header(keys: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
    keys.iter().chain(rest).copied().collect()
}

/// Every table, in the order of [`TABLES`].
pub fn tables(s: &Stats) -> Vec<Table> {
    let title = |name: &str| {
        TABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, t)| *t)
    };
    let counts = |name: &'static str, keys: &[&'static str], rows: &[Count]| Table {
        name,
        title: title(name),
        header: header(keys, &COUNT_HEADER),
        rows: count_rows(rows, keys.len() == 2),
    };
    vec![
        counts("by_item", &["事项编码", "事项名称"], &s.by_item),
        counts("by_village", &["村（社区）区划代码"], &s.by_village),
        counts("by_town", &["乡镇（街道）区划代码"], &s.by_town),
        counts("by_month", &["受理月份"], &s.by_month),
        Table {
            name: "by_status",
            title: title("by_status"),
            header: vec!["状态", "状态名称", "办件数"],
            rows: s
                .by_status
                .iter()
                .map(|c| vec![c.key.clone(), c.name.clone(), c.cases.to_string()])
                .collect(),
        },
        Table {
            name: "by_step",
            title: title("by_step"),
            header: vec![
                "事项编码",
                "事项名称",
                "环节",
                "环节名称",
                "环节时限(工作日)",
                "办件数",
                "合计工作日",
                "平均工作日",
                "超环节时限",
            ],
            rows: s
                .by_step
                .iter()
                .map(|r| {
                    vec![
                        r.item_code.clone(),
                        r.item_name.clone(),
                        r.step.clone(),
                        r.step_name.clone(),
                        r.limit_days.map(|d| d.to_string()).unwrap_or_default(),
                        r.cases.to_string(),
                        r.total_days.to_string(),
                        format!("{:.1}", r.average_days),
                        r.over_limit.to_string(),
                    ]
                })
                .collect(),
        },
        Table {
            name: "satisfaction",
            title: title("satisfaction"),
            header: vec!["评价等级", "等级名称", "办件数", "占比(%)"],
            rows: s
                .satisfaction
                .levels
                .iter()
                .map(|l| {
                    vec![
                        l.level.to_string(),
                        l.name.to_string(),
                        l.cases.to_string(),
                        percent(l.share),
                    ]
                })
                .collect(),
        },
    ]
}

/// The chart above each table.
fn chart_of(s: &Stats, name: &str, title: &str) -> String {
    let counts = |rows: &[Count]| -> Vec<Bar> {
        rows.iter()
            .map(|c| Bar::count(c.name.clone(), c.cases))
            .collect()
    };
    let bars = match name {
        "by_item" => counts(&s.by_item),
        "by_village" => counts(&s.by_village),
        "by_town" => counts(&s.by_town),
        "by_month" => counts(&s.by_month),
        "by_status" => counts(&s.by_status),
        "by_step" => s
            .by_step
            .iter()
            .map(|r| Bar {
                label: format!("{}·{}", r.item_name, r.step_name),
                value: r.average_days,
                text: format!("{:.1} 个工作日", r.average_days),
            })
            .collect(),
        _ => s
            .satisfaction
            .levels
            .iter()
            .map(|l| Bar::count(format!("{}（{}）", l.name, l.level), l.cases))
            .collect(),
    };
    chart::bar_chart(&format!("chart-{name}"), title, &bars)
}

/// The CSV text of a table: a UTF-8 byte-order mark first (so Excel reads the Chinese
/// right), then the header row and the rows, quoted where needed.
pub fn csv_bytes(table: &Table) -> Result<Vec<u8>, AppError> {
    let internal = |e: csv::Error| AppError::Internal(format!("csv: {e}"));
    let mut w = csv::Writer::from_writer("\u{feff}".as_bytes().to_vec());
    w.write_record(&table.header).map_err(internal)?;
    for row in &table.rows {
        w.write_record(row).map_err(internal)?;
    }
    w.into_inner()
        .map_err(|e| AppError::Internal(format!("csv: {e}")))
}

struct Section {
    table: Table,
    chart: String,
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsTpl {
    chrome: Chrome,
    s: Stats,
    on_time_rate: String,
    satisfied_rate: String,
    sections: Vec<Section>,
}

/// `GET /stats` (统计分析): every breakdown of the cases this node holds.
pub async fn stats_page(State(state): State<AppState>, auth: Auth) -> PageResult {
    auth.require(Action::ViewStatistics)?;
    let s = gather(&state).await?;
    let sections = tables(&s)
        .into_iter()
        .map(|table| Section {
            chart: chart_of(&s, table.name, table.title),
            table,
        })
        .collect();
    page(&StatsTpl {
        chrome: Chrome::new(&state, Some(&auth), "统计分析"),
        on_time_rate: percent(s.on_time.rate),
        satisfied_rate: percent(s.satisfaction.satisfied_rate),
        s,
        sections,
    })
}

#[derive(Debug, Deserialize)]
pub struct CsvParams {
    table: Option<String>,
}

/// `GET /stats.csv?table=NAME`: one table as CSV (`text/csv; charset=utf-8`, with a BOM),
/// as a download named after the table and the day.
pub async fn stats_csv(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<CsvParams>,
) -> PageResult {
    auth.require(Action::ViewStatistics)?;
    let name = p.table.unwrap_or_default();
    if !TABLES.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = TABLES.iter().map(|(n, _)| *n).collect();
        return Err(AppError::BadRequest(Msg::new(
            format!("没有名为“{name}”的统计表；可选：{}", names.join("、")),
            format!("no statistics table {name:?}; one of {}", names.join(", ")),
        ))
        .into());
    }
    let s = gather(&state).await?;
    let table = tables(&s)
        .into_iter()
        .find(|t| t.name == name)
        .ok_or(AppError::NotFound)?;
    let bytes = csv_bytes(&table)?;
    let filename = format!("yiciban-stats-{name}-{}.csv", s.today);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

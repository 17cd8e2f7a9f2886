//! Numbered migrations, run in order at open. Each one runs once; `meta-1.schema_version`
//! records the last applied.

use redb::{Database, ReadableTable};

use super::StoreError;
use super::tables::*;

type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// All migrations; the store's schema version is their count.
const MIGRATIONS: [Migration; 3] = [
    migration_001_initial_tables,
    migration_002_store_epoch,
    migration_003_sync_cursors,
];

fn migration_001_initial_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CASE_DOCS)?;
    txn.open_table(CASE_SUMMARIES)?;
    txn.open_table(CASE_BY_STATUS)?;
    txn.open_table(CASE_BY_DATE)?;
    txn.open_table(CASE_BY_RECEIPT)?;
    txn.open_table(CASE_BY_NAME)?;
    txn.open_table(CASE_BY_ID_TAIL)?;
    txn.open_table(RECEIPT_SEQ)?;
    txn.open_table(BLOBS)?;
    txn.open_table(USERS)?;
    txn.open_table(FEED)?;
    txn.open_table(FEED_POS)?;
    Ok(())
}

/// The store's epoch: a random number drawn once, which sync cursors are tied to.
fn migration_002_store_epoch(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get("store_epoch")?.is_none() {
        let epoch: u64 = rand::random();
        meta.insert("store_epoch", epoch.to_be_bytes().as_slice())?;
    }
    Ok(())
}

fn migration_003_sync_cursors(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SYNC_CURSORS)?;
    Ok(())
}

/// Brings the database to the newest schema; refuses a database from a newer build.
pub fn run(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let current = {
        let meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| {
            let mut bytes = [0u8; 8];
            let value = v.value();
            if value.len() == 8 {
                bytes.copy_from_slice(value);
            }
            u64::from_be_bytes(bytes)
        });
        version.unwrap_or(0)
    };
    let known = MIGRATIONS.len() as u64;
    if current > known {
        return Err(StoreError::NewerSchema {
            found: current,
            known,
        });
    }
    for migration in &MIGRATIONS[current as usize..] {
        migration(&txn)?;
    }
    txn.open_table(META)?
        .insert("schema_version", known.to_be_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}
